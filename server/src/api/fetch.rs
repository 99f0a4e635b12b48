//! Fetch (v4-v12): reads whole stored batches on each partition's owner
//! shard, long-polls until `min_bytes` or `max_wait_ms`, trims to the
//! response `max_bytes` (always keeping the first batch, KIP-74) and answers
//! with the stored batch bytes as they are. Fetch sessions are declined
//! (`session_id` 0), so clients send full fetches.

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::future::{join_all, select, select_all, Either};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::produce::engine_error_code;
use crate::shard::{Shard, ShardError};

/// Longest long poll honoured, whatever the client asks.
pub const MAX_WAIT_MS_LIMIT: i32 = 60_000;

#[derive(Debug, Clone)]
struct Want {
    topic: String,
    partition: i32,
    offset: i64,
    max_bytes: usize,
}

#[derive(Debug, Clone, Default)]
struct Got {
    error: Option<ResponseError>,
    high_watermark: i64,
    log_start_offset: i64,
    log_end_offset: i64,
    batches: Vec<Bytes>,
}

impl Got {
    fn error(e: ResponseError) -> Got {
        Got {
            error: Some(e),
            high_watermark: -1,
            log_start_offset: -1,
            log_end_offset: -1,
            batches: Vec::new(),
        }
    }
}

pub async fn handle(shard: &Rc<Shard>, req: FetchRequest, _version: i16) -> FetchResponse {
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
            });
        }
        shape.push((name, partitions));
    }

    let max_wait = Duration::from_millis(req.max_wait_ms.clamp(0, MAX_WAIT_MS_LIMIT) as u64);
    let deadline = Instant::now() + max_wait;
    let min_bytes = req.min_bytes.max(0) as usize;
    let mut got = read_all(shard, &wants).await;
    loop {
        let total: usize = got
            .iter()
            .flat_map(|g| g.batches.iter())
            .map(Bytes::len)
            .sum();
        let any_error = got.iter().any(|g| g.error.is_some());
        let now = Instant::now();
        if total >= min_bytes.max(1) || any_error || now >= deadline || shard.is_shutting_down() {
            break;
        }
        // Wait for any partition to grow past the end seen by the last read.
        let waits: Vec<Want> = wants
            .iter()
            .zip(&got)
            .map(|(w, g)| Want {
                offset: g.log_end_offset.max(w.offset),
                ..w.clone()
            })
            .collect();
        wait_any(shard, &waits, deadline - now).await;
        got = read_all(shard, &wants).await;
    }

    trim_to_max_bytes(&mut got, req.max_bytes.max(0) as usize);

    let mut got = got.into_iter();
    let responses = shape
        .into_iter()
        .map(|(name, partitions)| {
            let partitions = partitions
                .into_iter()
                .map(|index| {
                    let g = got
                        .next()
                        .unwrap_or_else(|| Got::error(ResponseError::UnknownServerError));
                    PartitionData::default()
                        .with_partition_index(index)
                        .with_error_code(g.error.map_or(0, |e| e.code()))
                        .with_high_watermark(g.high_watermark)
                        .with_last_stable_offset(g.high_watermark)
                        .with_log_start_offset(g.log_start_offset)
                        .with_aborted_transactions(Some(Vec::new()))
                        .with_preferred_read_replica(BrokerId(-1))
                        .with_records(Some(concat(g.batches)))
                })
                .collect();
            FetchableTopicResponse::default()
                .with_topic(TopicName(StrBytes::from_string(name)))
                .with_partitions(partitions)
        })
        .collect();
    FetchResponse::default()
        .with_session_id(0)
        .with_responses(responses)
}

/// Joins stored batches into the partition's `records` field. One batch is
/// passed as is; several are copied once (never re-encoded).
fn concat(batches: Vec<Bytes>) -> Bytes {
    match batches.len() {
        0 => Bytes::new(),
        1 => batches.into_iter().next().unwrap_or_default(),
        _ => {
            let mut out = BytesMut::with_capacity(batches.iter().map(Bytes::len).sum());
            for b in batches {
                out.extend_from_slice(&b);
            }
            out.freeze()
        }
    }
}

/// Keeps whole batches while the response stays within `max_bytes`, except
/// that the first batch of the first non-empty partition is always kept.
fn trim_to_max_bytes(got: &mut [Got], max_bytes: usize) {
    let mut total = 0usize;
    let mut first = true;
    for g in got.iter_mut() {
        let mut keep = 0;
        for b in &g.batches {
            if !first && total + b.len() > max_bytes {
                break;
            }
            first = false;
            total += b.len();
            keep += 1;
        }
        g.batches.truncate(keep);
    }
}

/// Reads every wanted partition on its owner shard; results in `wants` order.
async fn read_all(shard: &Rc<Shard>, wants: &[Want]) -> Vec<Got> {
    let mut by_shard: Vec<Vec<(usize, Want)>> = (0..shard.shards).map(|_| Vec::new()).collect();
    for (i, w) in wants.iter().enumerate() {
        by_shard[shard.owner(&w.topic, w.partition)].push((i, w.clone()));
    }
    let jobs = by_shard
        .into_iter()
        .enumerate()
        .filter(|(_, v)| !v.is_empty())
        .map(|(target, group)| {
            let indexes: Vec<usize> = group.iter().map(|(i, _)| *i).collect();
            let group: Vec<Want> = group.into_iter().map(|(_, w)| w).collect();
            async move {
                let result = shard
                    .run_on(target, move |owner| async move {
                        join_all(group.into_iter().map(|w| read_local(&owner, w))).await
                    })
                    .await;
                (indexes, result)
            }
        });
    let mut out = vec![Got::default(); wants.len()];
    for (indexes, result) in join_all(jobs).await {
        match result {
            Ok(results) => {
                for (i, g) in indexes.into_iter().zip(results) {
                    out[i] = g;
                }
            }
            Err(ShardError::Gone(_)) | Err(ShardError::Persist(_)) => {
                for i in indexes {
                    out[i] = Got::error(ResponseError::NotLeaderOrFollower);
                }
            }
        }
    }
    out
}

async fn read_local(shard: &Shard, w: Want) -> Got {
    let Some(log) = shard.log(&w.topic, w.partition) else {
        return Got::error(ResponseError::UnknownTopicOrPartition);
    };
    match log.read(w.offset, w.max_bytes).await {
        Ok(r) => Got {
            error: None,
            high_watermark: r.high_watermark,
            log_start_offset: r.log_start_offset,
            log_end_offset: r.log_end_offset,
            batches: r.batches,
        },
        Err(e) => {
            let mut g = Got::error(engine_error_code(&e));
            g.high_watermark = log.high_watermark();
            g.log_start_offset = log.log_start_offset();
            g.log_end_offset = log.log_end_offset();
            g
        }
    }
}

/// Resolves when any partition's log grows past the offset in its `Want`,
/// or after `timeout`.
async fn wait_any(shard: &Rc<Shard>, waits: &[Want], timeout: Duration) {
    let mut by_shard: Vec<Vec<Want>> = (0..shard.shards).map(|_| Vec::new()).collect();
    for w in waits {
        by_shard[shard.owner(&w.topic, w.partition)].push(w.clone());
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
        .filter_map(|w| shard.log(&w.topic, w.partition).map(|l| (l, w.offset)))
        .collect();
    if logs.is_empty() {
        glommio::timer::sleep(timeout).await;
        return;
    }
    let waits: Vec<_> = logs
        .iter()
        .map(|(log, offset)| Box::pin(log.wait_for_offset(*offset)))
        .collect();
    let timer = Box::pin(glommio::timer::sleep(timeout));
    let shutdown = Box::pin(shard.shutdown.notified());
    let _ = select(select(select_all(waits), timer), shutdown).await;
}
