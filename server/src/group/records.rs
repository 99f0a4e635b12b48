//! The records of the internal topic `__consumer_offsets`, in Kafka's own
//! key and value schemas, so that the log reads like Kafka's.
//!
//! ```text
//! OffsetCommitKey v1   (key version 0 and 1 share the layout)
//!   int16  version = 1
//!   string group        (int16 length, UTF-8)
//!   string topic
//!   int32  partition
//!
//! OffsetCommitValue v3 (null value = tombstone: the offset is deleted)
//!   int16  version = 3
//!   int64  offset           (the next offset to read)
//!   int32  leader_epoch     (-1: unknown)
//!   string metadata
//!   int64  commit_timestamp (ms)
//! ```
//!
//! Values v0..v2 are read too (v1 carries an expire timestamp that is
//! ignored).
//!
//! ```text
//! GroupMetadataKey v2
//!   int16  version = 2
//!   string group
//!
//! GroupMetadataValue v3 (null value = tombstone: the group is deleted)
//!   int16  version = 3
//!   string protocol_type
//!   int32  generation
//!   nullable string protocol
//!   nullable string leader
//!   int64  current_state_timestamp (ms)
//!   int32  member count, then per member:
//!     string member_id
//!     nullable string group_instance_id
//!     string client_id
//!     string client_host
//!     int32  rebalance_timeout_ms
//!     int32  session_timeout_ms
//!     bytes  subscription (int32 length)
//!     bytes  assignment   (int32 length)
//! ```
//!
//! A group's metadata is written when a rebalance completes (and when the
//! group becomes empty), so that the next leader of its partition knows the
//! members and their generation: after a coordinator moves, the members
//! heartbeat and commit as before instead of being told UNKNOWN_MEMBER_ID.
//! Values v0..v2 are read too (v0 has no rebalance timeout, v0 and v1 no
//! state timestamp, v0..v2 no instance ids); the flexible v4 is not (it is
//! skipped, as are newer key versions).
//!
//! Records are framed in uncompressed RecordBatch v2 built here; the engine
//! validates and stores them, and `parse_batches` walks them back at load.

use bytes::Bytes;
use strom_engine::batch::{BatchHeader, HEADER_BYTES, LOG_OVERHEAD};

/// Kafka's `offset.metadata.max.bytes` default bounds each value; this bounds
/// one RecordBatch we build so that a huge commit is split into several.
pub const MAX_BATCH_BYTES: usize = 256 * 1024;

const OFFSET_KEY_VERSION: i16 = 1;
const GROUP_METADATA_KEY_VERSION: i16 = 2;
const OFFSET_VALUE_VERSION: i16 = 3;
const GROUP_VALUE_VERSION: i16 = 3;
/// The smallest member of a GroupMetadataValue (v0, empty strings and
/// bytes): three string lengths, the session timeout, two byte lengths.
const MIN_MEMBER_BYTES: usize = 18;

/// The key of an offset commit record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetKey {
    pub group: String,
    pub topic: String,
    pub partition: i32,
}

/// The value of an offset commit record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetValue {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
}

/// A group's membership as a completed rebalance left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupValue {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub current_state_timestamp_ms: i64,
    pub members: Vec<MemberValue>,
}

/// One member of a [`GroupValue`]: its metadata for the selected protocol
/// and the assignment it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberValue {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    pub subscription: Bytes,
    pub assignment: Bytes,
}

/// A decoded record key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    Offset(OffsetKey),
    /// The group metadata key of this group.
    Group(String),
    /// A newer key version: not ours to interpret.
    Other,
}

/// One record read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OffsetRecord {
    /// An offset commit (`Some`) or its tombstone (`None`), at `log_offset`.
    Offset {
        key: OffsetKey,
        value: Option<OffsetValue>,
        log_offset: i64,
    },
    /// A group's metadata (`Some`) or its tombstone (`None`), at `log_offset`.
    Group {
        group: String,
        value: Option<GroupValue>,
        log_offset: i64,
    },
    /// A record this coordinator does not interpret (group metadata, newer
    /// key versions).
    Other,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("record truncated")]
    Truncated,
    #[error("string is not UTF-8")]
    Utf8,
    #[error("unsupported offset value version {0}")]
    ValueVersion(i16),
}

pub fn encode_key(key: &OffsetKey) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        key.group
            .len()
            .saturating_add(key.topic.len())
            .saturating_add(8),
    );
    out.extend_from_slice(&OFFSET_KEY_VERSION.to_be_bytes());
    put_string(&mut out, &key.group);
    put_string(&mut out, &key.topic);
    out.extend_from_slice(&key.partition.to_be_bytes());
    out
}

pub fn encode_value(value: &OffsetValue) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.metadata.len().saturating_add(24));
    out.extend_from_slice(&OFFSET_VALUE_VERSION.to_be_bytes());
    out.extend_from_slice(&value.offset.to_be_bytes());
    out.extend_from_slice(&value.leader_epoch.to_be_bytes());
    put_string(&mut out, &value.metadata);
    out.extend_from_slice(&value.commit_timestamp_ms.to_be_bytes());
    out
}

/// Decodes a record key.
pub fn decode_key(buf: &[u8]) -> Result<Key, RecordError> {
    let mut r = Reader { buf };
    let version = r.i16()?;
    if version == GROUP_METADATA_KEY_VERSION {
        return Ok(Key::Group(r.string()?));
    }
    if version > 1 {
        return Ok(Key::Other);
    }
    let group = r.string()?;
    let topic = r.string()?;
    let partition = r.i32()?;
    Ok(Key::Offset(OffsetKey {
        group,
        topic,
        partition,
    }))
}

pub fn encode_group_key(group: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(group.len().saturating_add(4));
    out.extend_from_slice(&GROUP_METADATA_KEY_VERSION.to_be_bytes());
    put_string(&mut out, group);
    out
}

pub fn encode_group_value(value: &GroupValue) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&GROUP_VALUE_VERSION.to_be_bytes());
    put_string(&mut out, &value.protocol_type);
    out.extend_from_slice(&value.generation.to_be_bytes());
    put_nullable_string(&mut out, value.protocol.as_deref());
    put_nullable_string(&mut out, value.leader.as_deref());
    out.extend_from_slice(&value.current_state_timestamp_ms.to_be_bytes());
    let count = i32::try_from(value.members.len()).unwrap_or(i32::MAX);
    out.extend_from_slice(&count.to_be_bytes());
    for m in &value.members {
        put_string(&mut out, &m.member_id);
        put_nullable_string(&mut out, m.group_instance_id.as_deref());
        put_string(&mut out, &m.client_id);
        put_string(&mut out, &m.client_host);
        out.extend_from_slice(&m.rebalance_timeout_ms.to_be_bytes());
        out.extend_from_slice(&m.session_timeout_ms.to_be_bytes());
        put_bytes(&mut out, &m.subscription);
        put_bytes(&mut out, &m.assignment);
    }
    out
}

/// Decodes a GroupMetadataValue v0..v3; `Ok(None)` for a newer version.
pub fn decode_group_value(buf: &[u8]) -> Result<Option<GroupValue>, RecordError> {
    let mut r = Reader { buf };
    let version = r.i16()?;
    if !(0..=GROUP_VALUE_VERSION).contains(&version) {
        return Ok(None);
    }
    let protocol_type = r.string()?;
    let generation = r.i32()?;
    let protocol = r.nullable_string()?;
    let leader = r.nullable_string()?;
    let current_state_timestamp_ms = if version >= 2 { r.i64()? } else { -1 };
    let count = r.i32()?;
    // Each member takes at least MIN_MEMBER_BYTES: a count past that is
    // corrupt, not a reason to reserve memory.
    let count = usize::try_from(count).map_err(|_| RecordError::Truncated)?;
    if count > r.buf.len() / MIN_MEMBER_BYTES {
        return Err(RecordError::Truncated);
    }
    let mut members = Vec::with_capacity(count);
    for _ in 0..count {
        let member_id = r.string()?;
        let group_instance_id = if version >= 3 {
            r.nullable_string()?
        } else {
            None
        };
        let client_id = r.string()?;
        let client_host = r.string()?;
        let rebalance_timeout_ms = if version >= 1 { r.i32()? } else { 0 };
        let session_timeout_ms = r.i32()?;
        let subscription = r.bytes_i32()?;
        let assignment = r.bytes_i32()?;
        members.push(MemberValue {
            member_id,
            group_instance_id,
            client_id,
            client_host,
            rebalance_timeout_ms,
            session_timeout_ms,
            subscription,
            assignment,
        });
    }
    Ok(Some(GroupValue {
        protocol_type,
        generation,
        protocol,
        leader,
        current_state_timestamp_ms,
        members,
    }))
}

pub fn decode_value(buf: &[u8]) -> Result<OffsetValue, RecordError> {
    let mut r = Reader { buf };
    let version = r.i16()?;
    let offset = r.i64()?;
    let (leader_epoch, metadata, commit_timestamp_ms) = match version {
        0 => {
            let metadata = r.string()?;
            (-1, metadata, r.i64()?)
        }
        1 | 2 => {
            let metadata = r.string()?;
            (-1, metadata, r.i64()?)
        }
        3 | 4 => {
            let epoch = r.i32()?;
            let metadata = r.string()?;
            (epoch, metadata, r.i64()?)
        }
        v => return Err(RecordError::ValueVersion(v)),
    };
    Ok(OffsetValue {
        offset,
        leader_epoch,
        metadata,
        commit_timestamp_ms,
    })
}

/// Builds RecordBatch v2 bytes (one or more concatenated batches, each at
/// most about `MAX_BATCH_BYTES`) holding `records` as (key, value) pairs,
/// `None` values being tombstones. Returns empty bytes for no records.
pub fn build_batches(records: &[(Vec<u8>, Option<Vec<u8>>)], timestamp_ms: i64) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = records;
    while !rest.is_empty() {
        // At least one record per batch, then as many as fit.
        let mut taken = 0usize;
        let mut bytes = 0usize;
        for (k, v) in rest {
            let size = k
                .len()
                .saturating_add(v.as_ref().map_or(0, |v| v.len()))
                .saturating_add(32);
            bytes = bytes.saturating_add(size);
            if taken > 0 && bytes > MAX_BATCH_BYTES {
                break;
            }
            taken = taken.saturating_add(1);
        }
        let (batch, after) = rest.split_at(taken.min(rest.len()));
        build_one_batch(&mut out, batch, timestamp_ms);
        rest = after;
    }
    out
}

/// Appends one batch of `records` (not empty: `build_batches` gives each at
/// least one, and no more than a batch holds) to `out`.
fn build_one_batch(out: &mut Vec<u8>, records: &[(Vec<u8>, Option<Vec<u8>>)], timestamp_ms: i64) {
    let count = i32::try_from(records.len()).unwrap_or(i32::MAX);
    let mut body = Vec::new();
    for (i, (key, value)) in records.iter().enumerate() {
        let mut rec = Vec::with_capacity(key.len().saturating_add(16));
        rec.push(0u8); // attributes
        put_varint(&mut rec, 0); // timestamp delta
        put_varint(&mut rec, i as i64); // offset delta
        put_varint(&mut rec, key.len() as i64);
        rec.extend_from_slice(key);
        match value {
            Some(v) => {
                put_varint(&mut rec, v.len() as i64);
                rec.extend_from_slice(v);
            }
            None => put_varint(&mut rec, -1),
        }
        put_varint(&mut rec, 0); // header count
        put_varint(&mut body, rec.len() as i64);
        body.extend_from_slice(&rec);
    }
    let begin = out.len();
    out.extend_from_slice(&0i64.to_be_bytes()); // base offset, assigned by the log
    let batch_length = body.len().saturating_add(HEADER_BYTES - LOG_OVERHEAD);
    out.extend_from_slice(
        &i32::try_from(batch_length)
            .unwrap_or(i32::MAX)
            .to_be_bytes(),
    );
    out.extend_from_slice(&(-1i32).to_be_bytes()); // partition leader epoch
    out.push(2); // magic
    out.extend_from_slice(&0u32.to_be_bytes()); // crc, below
    out.extend_from_slice(&0i16.to_be_bytes()); // attributes: uncompressed, CreateTime
    out.extend_from_slice(&count.saturating_sub(1).to_be_bytes());
    out.extend_from_slice(&timestamp_ms.to_be_bytes());
    out.extend_from_slice(&timestamp_ms.to_be_bytes());
    out.extend_from_slice(&(-1i64).to_be_bytes()); // producer id
    out.extend_from_slice(&(-1i16).to_be_bytes()); // producer epoch
    out.extend_from_slice(&(-1i32).to_be_bytes()); // base sequence
    out.extend_from_slice(&count.to_be_bytes());
    out.extend_from_slice(&body);
    if let Some(batch) = out.get_mut(begin..) {
        strom_engine::batch::set_crc(batch);
    }
}

/// Walks stored batches and yields their records with absolute offsets.
/// Records below `from_offset` (the head of a batch that a read returned
/// whole) are skipped. Compressed and control batches are skipped: this
/// coordinator never writes them. Returns the offset after the last batch.
pub fn parse_batches(
    batches: &[Bytes],
    from_offset: i64,
    out: &mut Vec<OffsetRecord>,
) -> Result<i64, RecordError> {
    let mut next = from_offset;
    for batch in batches {
        let h = BatchHeader::parse(batch).map_err(|_| RecordError::Truncated)?;
        if h.total_bytes() > batch.len() {
            return Err(RecordError::Truncated);
        }
        next = next.max(h.last_offset().saturating_add(1));
        if h.attributes & 0x7 != 0 || h.is_control() {
            tracing::warn!(
                base_offset = h.base_offset,
                "skipping compressed or control batch in __consumer_offsets"
            );
            continue;
        }
        let mut r = Reader {
            buf: batch
                .get(HEADER_BYTES..h.total_bytes())
                .ok_or(RecordError::Truncated)?,
        };
        for _ in 0..h.record_count {
            let len = r.varint()?;
            if len < 0 {
                return Err(RecordError::Truncated);
            }
            let mut rec = Reader {
                buf: r.take(len as usize)?,
            };
            rec.take(1)?; // attributes
            rec.varint()?; // timestamp delta
            let offset = h.base_offset.saturating_add(rec.varint()?);
            let key = rec.bytes_varint()?;
            let value = rec.bytes_varint()?;
            if offset < from_offset {
                continue;
            }
            let record = match key.map(decode_key).transpose()? {
                Some(Key::Offset(key)) => {
                    let value = value.map(decode_value).transpose()?;
                    OffsetRecord::Offset {
                        key,
                        value,
                        log_offset: offset,
                    }
                }
                Some(Key::Group(group)) => match value.map(decode_group_value).transpose()? {
                    // A value version this coordinator cannot read.
                    Some(None) => OffsetRecord::Other,
                    value => OffsetRecord::Group {
                        group,
                        value: value.flatten(),
                        log_offset: offset,
                    },
                },
                Some(Key::Other) | None => OffsetRecord::Other,
            };
            out.push(record);
        }
    }
    Ok(next)
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    // Group ids (`MAX_GROUP_ID_BYTES`, checked by every group request), topic
    // names (existing topics, at most 249 bytes) and commit metadata
    // (`offset.metadata.max.bytes`) are checked before they reach here.
    assert!(
        s.len() <= i16::MAX as usize,
        "string too long for an int16 length"
    );
    out.extend_from_slice(&(s.len() as i16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_nullable_string(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => put_string(out, s),
        None => out.extend_from_slice(&(-1i16).to_be_bytes()),
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    // Subscriptions and assignments come in JoinGroup and SyncGroup
    // requests, far below 2 GiB (the request size limit).
    let len = i32::try_from(b.len()).unwrap_or(i32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(b);
}

fn put_varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        if self.buf.len() < n {
            return Err(RecordError::Truncated);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], RecordError> {
        <[u8; N]>::try_from(self.take(N)?).map_err(|_| RecordError::Truncated)
    }

    fn i16(&mut self) -> Result<i16, RecordError> {
        Ok(i16::from_be_bytes(self.array()?))
    }

    fn i32(&mut self) -> Result<i32, RecordError> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    fn i64(&mut self) -> Result<i64, RecordError> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    fn string(&mut self) -> Result<String, RecordError> {
        let len = self.i16()?;
        if len < 0 {
            return Ok(String::new());
        }
        let b = self.take(len as usize)?;
        String::from_utf8(b.to_vec()).map_err(|_| RecordError::Utf8)
    }

    fn nullable_string(&mut self) -> Result<Option<String>, RecordError> {
        let len = self.i16()?;
        if len < 0 {
            return Ok(None);
        }
        let b = self.take(len as usize)?;
        String::from_utf8(b.to_vec())
            .map(Some)
            .map_err(|_| RecordError::Utf8)
    }

    fn bytes_i32(&mut self) -> Result<Bytes, RecordError> {
        let len = self.i32()?;
        if len < 0 {
            return Ok(Bytes::new());
        }
        Ok(Bytes::copy_from_slice(self.take(len as usize)?))
    }

    fn varint(&mut self) -> Result<i64, RecordError> {
        let mut z: u64 = 0;
        for shift in (0..70).step_by(7) {
            let [b] = self.array()?;
            z |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                // Zigzag: 0, -1, 1, -2, ... (the sign is the low bit).
                let magnitude = (z >> 1) as i64;
                return Ok(if z & 1 == 0 { magnitude } else { !magnitude });
            }
        }
        Err(RecordError::Truncated)
    }

    fn bytes_varint(&mut self) -> Result<Option<&'a [u8]>, RecordError> {
        let len = self.varint()?;
        if len < 0 {
            return Ok(None);
        }
        Ok(Some(self.take(len as usize)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_and_value_round_trip() {
        let key = OffsetKey {
            group: "g".into(),
            topic: "t".into(),
            partition: 7,
        };
        assert_eq!(decode_key(&encode_key(&key)).unwrap(), Key::Offset(key));
        let value = OffsetValue {
            offset: 42,
            leader_epoch: 3,
            metadata: "m".into(),
            commit_timestamp_ms: 1000,
        };
        assert_eq!(decode_value(&encode_value(&value)).unwrap(), value);
        // Kafka's byte layout of OffsetCommitValue v3.
        let bytes = encode_value(&value);
        assert_eq!(&bytes[0..2], &3i16.to_be_bytes());
        assert_eq!(&bytes[2..10], &42i64.to_be_bytes());
        assert_eq!(bytes.len(), 2 + 8 + 4 + 2 + 1 + 8);
    }

    #[test]
    fn batches_validate_in_the_engine_and_parse_back() {
        let key = OffsetKey {
            group: "g".into(),
            topic: "t".into(),
            partition: 0,
        };
        let value = OffsetValue {
            offset: 5,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp_ms: 9,
        };
        let records = vec![
            (encode_key(&key), Some(encode_value(&value))),
            (encode_key(&key), None),
        ];
        let mut bytes = build_batches(&records, 9);
        let parsed = strom_engine::batch::split_and_validate(&bytes).unwrap();
        assert_eq!(parsed.len(), 1);
        strom_engine::batch::set_base_offset(&mut bytes, 100);
        let mut out = Vec::new();
        let next = parse_batches(&[Bytes::from(bytes)], 100, &mut out).unwrap();
        assert_eq!(next, 102);
        assert_eq!(
            out,
            vec![
                OffsetRecord::Offset {
                    key: key.clone(),
                    value: Some(value),
                    log_offset: 100
                },
                OffsetRecord::Offset {
                    key,
                    value: None,
                    log_offset: 101
                },
            ]
        );
    }

    #[test]
    fn large_commits_split_into_several_valid_batches() {
        let records: Vec<_> = (0..2000)
            .map(|p| {
                let key = OffsetKey {
                    group: "g".into(),
                    topic: "t".into(),
                    partition: p,
                };
                let value = OffsetValue {
                    offset: 1,
                    leader_epoch: -1,
                    metadata: "x".repeat(500),
                    commit_timestamp_ms: 0,
                };
                (encode_key(&key), Some(encode_value(&value)))
            })
            .collect();
        let bytes = build_batches(&records, 0);
        let parsed = strom_engine::batch::split_and_validate(&bytes).unwrap();
        assert!(parsed.len() > 1);
        assert!(parsed
            .iter()
            .all(|(_, r)| r.len() <= MAX_BATCH_BYTES + 1024));
        let total: i32 = parsed.iter().map(|(h, _)| h.record_count).sum();
        assert_eq!(total, 2000);
    }

    fn group_value() -> GroupValue {
        GroupValue {
            protocol_type: "consumer".into(),
            generation: 7,
            protocol: Some("range".into()),
            leader: Some("m-1".into()),
            current_state_timestamp_ms: 1234,
            members: vec![MemberValue {
                member_id: "m-1".into(),
                group_instance_id: None,
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                rebalance_timeout_ms: 300000,
                session_timeout_ms: 45000,
                subscription: Bytes::from_static(b"sub"),
                assignment: Bytes::from_static(b"assigned"),
            }],
        }
    }

    #[test]
    fn group_metadata_round_trips_in_kafkas_layout() {
        let value = group_value();
        let bytes = encode_group_value(&value);
        assert_eq!(decode_group_value(&bytes).unwrap(), Some(value));
        // GroupMetadataValue v3: version, "consumer", generation 7.
        assert_eq!(&bytes[0..2], &3i16.to_be_bytes());
        assert_eq!(&bytes[2..4], &8i16.to_be_bytes());
        assert_eq!(&bytes[4..12], b"consumer");
        assert_eq!(&bytes[12..16], &7i32.to_be_bytes());
        let key = encode_group_key("g");
        assert_eq!(key, [0, 2, 0, 1, b'g']);
        assert_eq!(decode_key(&key).unwrap(), Key::Group("g".into()));
        // The flexible v4 is skipped, not an error.
        assert_eq!(decode_group_value(&[0, 4, 0, 0]).unwrap(), None);
        // A member count the bytes cannot hold is refused before allocating.
        let mut huge = bytes[..bytes.len()].to_vec();
        let at = 2 + 2 + 8 + 4 + 2 + 5 + 2 + 3 + 8;
        huge[at..at + 4].copy_from_slice(&i32::MAX.to_be_bytes());
        assert_eq!(decode_group_value(&huge), Err(RecordError::Truncated));
    }

    #[test]
    fn group_records_parse_back_with_their_tombstones() {
        let records = vec![
            (
                encode_group_key("g"),
                Some(encode_group_value(&group_value())),
            ),
            (encode_group_key("g"), None),
        ];
        let mut bytes = build_batches(&records, 9);
        strom_engine::batch::set_base_offset(&mut bytes, 10);
        let mut out = Vec::new();
        parse_batches(&[Bytes::from(bytes)], 10, &mut out).unwrap();
        assert_eq!(
            out,
            vec![
                OffsetRecord::Group {
                    group: "g".into(),
                    value: Some(group_value()),
                    log_offset: 10
                },
                OffsetRecord::Group {
                    group: "g".into(),
                    value: None,
                    log_offset: 11
                },
            ]
        );
    }

    #[test]
    fn truncated_input_is_an_error_not_a_panic() {
        assert_eq!(decode_value(&[0, 3, 1]), Err(RecordError::Truncated));
        assert_eq!(decode_key(&[0]), Err(RecordError::Truncated));
        let group = encode_group_value(&group_value());
        for cut in 0..group.len() {
            assert_eq!(
                decode_group_value(&group[..cut]),
                Err(RecordError::Truncated)
            );
        }
        assert_eq!(
            decode_value(&[0, 9, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(RecordError::ValueVersion(9))
        );
    }
}
