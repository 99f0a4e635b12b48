//! ListOffsets (v1-v7): -2 earliest, -1 latest, -3 max timestamp (KIP-734),
//! otherwise the first offset whose timestamp is >= the one asked.

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

/// (error, timestamp, offset)
type Answer = (i16, i64, i64);

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
    .map(|answer| answer.unwrap_or((ResponseError::NotLeaderOrFollower.code(), -1, -1)));

    let mut topics = Vec::new();
    for topic in req.topics {
        let name = topic.name.0.as_str().to_string();
        let partitions = topic
            .partitions
            .iter()
            .zip(answers.by_ref())
            .map(|(p, (error, timestamp, offset))| {
                ListOffsetsPartitionResponse::default()
                    .with_partition_index(p.partition_index)
                    .with_error_code(error)
                    .with_timestamp(timestamp)
                    .with_offset(offset)
                    .with_leader_epoch(if version >= 4 { 0 } else { -1 })
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
        Err(e) => return (e.code(), -1, -1),
    };
    match timestamp {
        EARLIEST_TIMESTAMP => (0, -1, log.log_start_offset()),
        LATEST_TIMESTAMP => (0, -1, log.high_watermark()),
        // The segment knows the batch with the largest timestamp; the lookup
        // by that timestamp narrows it to the record.
        MAX_TIMESTAMP => match log.max_timestamp() {
            Some((offset, ts)) => match log.offset_for_timestamp(ts).await {
                Ok(Some((record_offset, record_ts))) => (0, record_ts, record_offset),
                _ => (0, ts, offset),
            },
            None => (0, -1, -1),
        },
        ts if ts < 0 => (ResponseError::InvalidRequest.code(), -1, -1),
        // Never below a log start that DeleteRecords moved into a segment.
        ts => match log.offset_for_timestamp(ts).await {
            Ok(Some((offset, found_ts))) => (0, found_ts, offset.max(log.log_start_offset())),
            Ok(None) => (0, -1, -1),
            Err(e) => (engine_error_code(&e).code(), -1, -1),
        },
    }
}
