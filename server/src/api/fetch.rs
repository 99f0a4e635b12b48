//! Fetch (v4-v12): reads whole stored batches on each partition's owner
//! shard within one response budget (`fetch_read`: the request's
//! `max_bytes` clamped to `fetch.max.bytes`, partitions in request order,
//! the first batch always whole, KIP-74), long-polls until `min_bytes` or
//! `max_wait_ms`, re-reading on a wake-up only the partitions that grew, and
//! answers with the stored batch bytes as they are. Fetch sessions are
//! declined (`session_id` 0), so clients send full fetches.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::future::{select, select_all, Either};
use kafka_protocol::messages::FetchRequest;
use kafka_protocol::ResponseError;

use super::fetch_read::{error_got, read_pass, refresh, Budget, Got, Want};
use crate::shard::Shard;
use crate::stages::Stage;
use crate::wire::{Reply, RequestContext};

/// Longest long poll honoured, whatever the client asks.
pub const MAX_WAIT_MS_LIMIT: i32 = 60_000;

pub async fn handle(shard: &Rc<Shard>, ctx: &RequestContext, req: FetchRequest) -> Reply {
    // A follower names itself (v4-v14's replica id; v15's ReplicaState is
    // past the versions served).
    let replica = (req.replica_id.0 >= 0).then_some(req.replica_id.0);
    let mut wants = Vec::new();
    let mut shape = Vec::new();
    for topic in req.topics {
        let name = topic.topic.0.as_str().to_string();
        let mut partitions = Vec::new();
        for p in topic.partitions {
            partitions.push(p.partition);
            wants.push(Want {
                topic: name.clone(),
                partition: p.partition,
                offset: p.fetch_offset,
                max_bytes: p.partition_max_bytes.max(0) as usize,
                replica,
                current_leader_epoch: p.current_leader_epoch,
            });
        }
        shape.push((name, partitions));
    }

    let max_wait = Duration::from_millis(req.max_wait_ms.clamp(0, MAX_WAIT_MS_LIMIT) as u64);
    let deadline = Instant::now()
        .checked_add(max_wait)
        .unwrap_or_else(Instant::now);
    let min_bytes = req.min_bytes.max(0) as usize;
    let max_bytes = (req.max_bytes.max(0) as usize).min(shard.config.fetch_max_bytes);
    let mut budget = Budget::new(max_bytes);
    let mut got: Vec<Got> = wants.iter().map(|w| Got::new(w.offset)).collect();
    loop {
        refresh(shard, &wants, &mut got).await;
        let reading = crate::stages::start();
        let progress = read_pass(shard, &wants, &mut got, &mut budget).await;
        crate::stages::record(Stage::FetchRead, reading);
        let total: usize = got.iter().map(|g| g.bytes).sum();
        let any_error = got.iter().any(|g| g.error.is_some());
        let now = Instant::now();
        if total >= min_bytes
            || any_error
            || budget.spent()
            || !got.iter().any(Got::waitable)
            || now >= deadline
            || shard.is_shutting_down()
        {
            break;
        }
        if progress {
            // A read stops at a segment's end: read on before waiting.
            continue;
        }
        // Wait for any partition's read bound (on one node, the offset
        // written to the device) to pass the one seen by the last read. Not
        // its log end: what lies between is not readable yet, and becomes
        // readable without the log growing. A follower's bound is the log
        // end: it waits for the leader to write past it.
        let waits: Vec<Want> = wants
            .iter()
            .zip(&got)
            .filter(|(_, g)| g.waitable())
            .map(|(w, g)| Want {
                offset: g.bound.max(g.next_offset),
                ..w.clone()
            })
            .collect();
        wait_any(shard, &waits, deadline.saturating_duration_since(now)).await;
    }

    let mut got = got.into_iter();
    let topics: Vec<TopicOut> = shape
        .into_iter()
        .map(|(name, partitions)| TopicOut {
            name,
            partitions: partitions
                .into_iter()
                .map(|index| {
                    let g = got
                        .next()
                        .unwrap_or_else(|| error_got(-1, ResponseError::UnknownServerError));
                    PartitionOut {
                        index,
                        error_code: g.error.map_or(0, |e| e.code()),
                        high_watermark: g.high_watermark,
                        last_stable_offset: g.high_watermark,
                        log_start_offset: g.log_start_offset,
                        batches: g.batches,
                    }
                })
                .collect(),
        })
        .collect();
    Reply::Frame(encode_fetch_response(
        ctx.header.correlation_id,
        ctx.version,
        &topics,
    ))
}

/// Resolves when any partition's read bound (its high watermark: on one
/// node, the offset written to the device) passes the offset in its `Want`,
/// or after `timeout`.
async fn wait_any(shard: &Rc<Shard>, waits: &[Want], timeout: Duration) {
    let mut by_shard: Vec<Vec<Want>> = (0..shard.shards).map(|_| Vec::new()).collect();
    for w in waits {
        if let Some(owned) = by_shard.get_mut(shard.owner(&w.topic, w.partition)) {
            owned.push(w.clone());
        }
    }
    let futures: Vec<_> = by_shard
        .into_iter()
        .enumerate()
        .filter(|(_, v)| !v.is_empty())
        .map(|(target, group)| {
            Box::pin(shard.run_on(target, move |owner| async move {
                wait_local(&owner, group, timeout).await
            }))
        })
        .collect();
    if futures.is_empty() {
        glommio::timer::sleep(timeout).await;
        return;
    }
    let timer = Box::pin(glommio::timer::sleep(timeout));
    match select(select_all(futures), timer).await {
        Either::Left(_) | Either::Right(_) => {}
    }
}

async fn wait_local(shard: &Shard, group: Vec<Want>, timeout: Duration) {
    let logs: Vec<_> = group
        .iter()
        .filter_map(|w| {
            shard
                .served_log(&w.topic, w.partition)
                .ok()
                .map(|l| (l, w.offset, w.replica.is_some()))
        })
        .collect();
    if logs.is_empty() {
        glommio::timer::sleep(timeout).await;
        return;
    }
    let waits: Vec<_> = logs
        .iter()
        .map(|(log, offset, replica)| {
            if *replica {
                Box::pin(log.wait_for_written(*offset)) as Pin<Box<dyn Future<Output = ()> + '_>>
            } else {
                Box::pin(log.wait_for_offset(*offset))
            }
        })
        .collect();
    let timer = Box::pin(glommio::timer::sleep(timeout));
    let shutdown = Box::pin(shard.shutdown.notified());
    let woke = matches!(
        select(select(select_all(waits), timer), shutdown).await,
        Either::Left((Either::Left(_), _))
    );
    if woke && crate::stages::enabled() {
        // The log that woke this poll is the one woken last.
        let woken = logs
            .iter()
            .filter_map(|(l, _, _)| l.readers_woken_at())
            .max();
        if let Some(at) = woken {
            crate::stages::record_duration(Stage::FetchWake, at.elapsed());
        }
    }
}

/// One partition of a Fetch response, batches as stored.
#[derive(Debug, Clone)]
pub struct PartitionOut {
    pub index: i32,
    pub error_code: i16,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    pub batches: Vec<Bytes>,
}

#[derive(Debug, Clone)]
pub struct TopicOut {
    pub name: String,
    pub partitions: Vec<PartitionOut>,
}

fn put_uvarint(buf: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

/// Encodes a whole Fetch response frame (size, header, body) for v4-v12 by
/// hand, so the stored batches are not copied: the frame is returned as
/// chunks, the encoded fixed parts interleaved with the batches' own
/// `Bytes`, for one vectored write. Byte-for-byte what kafka-protocol
/// encodes (see the test below); sessions are declined (`session_id` 0),
/// there are no aborted transactions and no preferred read replica.
pub fn encode_fetch_response(correlation_id: i32, version: i16, topics: &[TopicOut]) -> Vec<Bytes> {
    debug_assert!((4..=12).contains(&version));
    let flexible = version >= 12;
    let mut fixed = BytesMut::with_capacity(128);
    // (position in `fixed` where the records go, the batches)
    let mut splices: Vec<(usize, &[Bytes])> = Vec::new();
    let mut records_bytes = 0usize;

    fixed.put_i32(0); // frame size, patched below
    fixed.put_i32(correlation_id);
    if flexible {
        put_uvarint(&mut fixed, 0); // response header v1 tagged fields
    }
    fixed.put_i32(0); // throttle_time_ms
    if version >= 7 {
        fixed.put_i16(0); // error_code
        fixed.put_i32(0); // session_id: sessions declined
    }
    let put_len = |fixed: &mut BytesMut, n: usize| {
        if flexible {
            put_uvarint(fixed, (n as u64).saturating_add(1));
        } else {
            fixed.put_i32(n as i32);
        }
    };
    put_len(&mut fixed, topics.len());
    for t in topics {
        if flexible {
            put_uvarint(&mut fixed, (t.name.len() as u64).saturating_add(1));
        } else {
            fixed.put_i16(t.name.len() as i16);
        }
        fixed.put_slice(t.name.as_bytes());
        put_len(&mut fixed, t.partitions.len());
        for p in &t.partitions {
            fixed.put_i32(p.index);
            fixed.put_i16(p.error_code);
            fixed.put_i64(p.high_watermark);
            fixed.put_i64(p.last_stable_offset);
            if version >= 5 {
                fixed.put_i64(p.log_start_offset);
            }
            put_len(&mut fixed, 0); // aborted_transactions: empty
            if version >= 11 {
                fixed.put_i32(-1); // preferred_read_replica
            }
            let len: usize = p.batches.iter().map(Bytes::len).sum();
            put_len(&mut fixed, len);
            splices.push((fixed.len(), &p.batches));
            records_bytes = records_bytes.saturating_add(len);
            if flexible {
                put_uvarint(&mut fixed, 0); // partition tagged fields
            }
        }
        if flexible {
            put_uvarint(&mut fixed, 0); // topic tagged fields
        }
    }
    if flexible {
        put_uvarint(&mut fixed, 0); // response tagged fields
    }
    // The response is bounded by fetch.max.bytes (plus one KIP-74 batch),
    // far below i32::MAX.
    let size = fixed.len().saturating_sub(4).saturating_add(records_bytes);
    if let Some(field) = fixed.get_mut(0..4) {
        field.copy_from_slice(&i32::try_from(size).unwrap_or(i32::MAX).to_be_bytes());
    }

    let fixed = fixed.freeze();
    let mut chunks = Vec::with_capacity(splices.len().saturating_mul(2).saturating_add(1));
    let mut at = 0;
    for (pos, batches) in splices {
        if pos > at {
            chunks.push(fixed.slice(at..pos));
        }
        chunks.extend(batches.iter().filter(|b| !b.is_empty()).cloned());
        at = pos;
    }
    if at < fixed.len() {
        chunks.push(fixed.slice(at..));
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::{ApiKey, BrokerId, FetchResponse, ResponseHeader, TopicName};
    use kafka_protocol::protocol::{Encodable, StrBytes};

    fn reference(correlation_id: i32, version: i16, topics: &[TopicOut]) -> Vec<u8> {
        let responses = topics
            .iter()
            .map(|t| {
                FetchableTopicResponse::default()
                    .with_topic(TopicName(StrBytes::from_string(t.name.clone())))
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                let mut records = BytesMut::new();
                                for b in &p.batches {
                                    records.extend_from_slice(b);
                                }
                                PartitionData::default()
                                    .with_partition_index(p.index)
                                    .with_error_code(p.error_code)
                                    .with_high_watermark(p.high_watermark)
                                    .with_last_stable_offset(p.last_stable_offset)
                                    .with_log_start_offset(p.log_start_offset)
                                    .with_aborted_transactions(Some(Vec::new()))
                                    .with_preferred_read_replica(BrokerId(-1))
                                    .with_records(Some(records.freeze()))
                            })
                            .collect(),
                    )
            })
            .collect();
        let body = FetchResponse::default().with_responses(responses);
        let mut buf = BytesMut::new();
        buf.put_i32(0);
        ResponseHeader::default()
            .with_correlation_id(correlation_id)
            .encode(&mut buf, ApiKey::Fetch.response_header_version(version))
            .unwrap();
        body.encode(&mut buf, version).unwrap();
        let size = (buf.len() - 4) as i32;
        buf[0..4].copy_from_slice(&size.to_be_bytes());
        buf.to_vec()
    }

    #[test]
    fn hand_encoding_matches_kafka_protocol_for_every_version() {
        let batch = |n: u8| {
            Bytes::from(strom_engine::batch::build_batch(
                n as i64,
                &[&[n; 10][..], b"x"],
            ))
        };
        let topics = vec![
            TopicOut {
                name: "alpha".into(),
                partitions: vec![
                    PartitionOut {
                        index: 0,
                        error_code: 0,
                        high_watermark: 7,
                        last_stable_offset: 7,
                        log_start_offset: 0,
                        batches: vec![batch(1), batch(2)],
                    },
                    PartitionOut {
                        index: 3,
                        error_code: 1,
                        high_watermark: 5,
                        last_stable_offset: 5,
                        log_start_offset: 2,
                        batches: vec![],
                    },
                ],
            },
            TopicOut {
                name: "b".into(),
                partitions: vec![],
            },
        ];
        for version in 4..=12 {
            let chunks = encode_fetch_response(42, version, &topics);
            let ours: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
            assert_eq!(ours, reference(42, version, &topics), "version {version}");
        }
    }
}
