//! ListOffsets (v1-v7): -2 earliest, -1 latest, -3 max timestamp (KIP-734),
//! otherwise the first offset whose timestamp is >= the one asked. From v4
//! each answer carries the leader epoch of its offset, as Kafka's does: the
//! partition's current leader epoch for latest, else the epoch that wrote
//! the offset. A consumer keeps it with the position it resets to, and
//! validates that position with it after a leader change
//! (OffsetForLeaderEpoch); an older epoch there would read as a log
//! truncation and send the consumer back to that epoch's end.

use std::rc::Rc;

use futures_util::future::join_all;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::produce::engine_error_code;
use crate::scatter::scatter_gather;
use crate::shard::Shard;

pub const EARLIEST_TIMESTAMP: i64 = -2;
pub const LATEST_TIMESTAMP: i64 = -1;
pub const MAX_TIMESTAMP: i64 = -3;

/// (error, timestamp, offset, leader epoch)
type Answer = (i16, i64, i64, i32);

const NO_EPOCH: i32 = -1;

/// One partition to look up, in request order.
struct Lookup {
    topic: String,
    partition: i32,
    timestamp: i64,
}

pub async fn handle(
    shard: &Rc<Shard>,
    req: ListOffsetsRequest,
    version: i16,
) -> ListOffsetsResponse {
    let mut lookups = Vec::new();
    for topic in &req.topics {
        let name = topic.name.0.as_str();
        for p in &topic.partitions {
            let lookup = Lookup {
                topic: name.to_string(),
                partition: p.partition_index,
                timestamp: p.timestamp,
            };
            lookups.push((shard.owner(name, p.partition_index), lookup));
        }
    }
    let mut answers = scatter_gather(shard, lookups, |owner, group: Vec<Lookup>| async move {
        join_all(
            group
                .iter()
                .map(|l| lookup_local(&owner, &l.topic, l.partition, l.timestamp)),
        )
        .await
    })
    .await
    .into_iter()
    .map(|answer| answer.unwrap_or((ResponseError::NotLeaderOrFollower.code(), -1, -1, NO_EPOCH)));

    let mut topics = Vec::new();
    for topic in req.topics {
        let name = topic.name.0.as_str().to_string();
        let partitions = topic
            .partitions
            .iter()
            .zip(answers.by_ref())
            .map(|(p, (error, timestamp, offset, epoch))| {
                ListOffsetsPartitionResponse::default()
                    .with_partition_index(p.partition_index)
                    .with_error_code(error)
                    .with_timestamp(timestamp)
                    .with_offset(offset)
                    .with_leader_epoch(if version >= 4 { epoch } else { NO_EPOCH })
            })
            .collect();
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(TopicName(StrBytes::from_string(name)))
                .with_partitions(partitions),
        );
    }
    ListOffsetsResponse::default().with_topics(topics)
}

async fn lookup_local(shard: &Shard, topic: &str, partition: i32, timestamp: i64) -> Answer {
    let log = match shard.served_log(topic, partition) {
        Ok(log) => log,
        Err(e) => return (e.code(), -1, -1, NO_EPOCH),
    };
    let written_at = |offset: i64| log.epoch_for_offset(offset).unwrap_or(NO_EPOCH);
    match timestamp {
        EARLIEST_TIMESTAMP => {
            let start = log.log_start_offset();
            (0, -1, start, written_at(start))
        }
        LATEST_TIMESTAMP => {
            let led = crate::cluster::led_at_epoch(
                &shard.metadata(),
                shard.config.node_id,
                topic,
                partition,
            );
            (0, -1, log.high_watermark(), led.unwrap_or(NO_EPOCH))
        }
        // The segment knows the batch with the largest timestamp; the lookup
        // by that timestamp narrows it to the record.
        MAX_TIMESTAMP => match log.max_timestamp() {
            Some((offset, ts)) => match log.offset_for_timestamp(ts).await {
                Ok(Some((record_offset, record_ts))) => {
                    (0, record_ts, record_offset, written_at(record_offset))
                }
                _ => (0, ts, offset, written_at(offset)),
            },
            None => (0, -1, -1, NO_EPOCH),
        },
        ts if ts < 0 => (ResponseError::InvalidRequest.code(), -1, -1, NO_EPOCH),
        // Never below a log start that DeleteRecords moved into a segment.
        ts => match log.offset_for_timestamp(ts).await {
            Ok(Some((offset, found_ts))) => {
                let offset = offset.max(log.log_start_offset());
                (0, found_ts, offset, written_at(offset))
            }
            Ok(None) => (0, -1, -1, NO_EPOCH),
            Err(e) => (engine_error_code(&e).code(), -1, -1, NO_EPOCH),
        },
    }
}
