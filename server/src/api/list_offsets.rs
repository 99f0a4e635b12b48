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
use crate::shard::Shard;

pub const EARLIEST_TIMESTAMP: i64 = -2;
pub const LATEST_TIMESTAMP: i64 = -1;
pub const MAX_TIMESTAMP: i64 = -3;

/// (error, timestamp, offset)
type Answer = (i16, i64, i64);

pub async fn handle(
    shard: &Rc<Shard>,
    req: ListOffsetsRequest,
    version: i16,
) -> ListOffsetsResponse {
    let mut topics = Vec::new();
    for topic in req.topics {
        let name = topic.name.0.as_str().to_string();
        let lookups = topic.partitions.iter().map(|p| {
            let name = name.clone();
            let partition = p.partition_index;
            let timestamp = p.timestamp;
            let target = shard.owner(&name, partition);
            async move {
                shard
                    .run_on(target, move |owner| async move {
                        lookup_local(&owner, &name, partition, timestamp).await
                    })
                    .await
                    .unwrap_or((ResponseError::NotLeaderOrFollower.code(), -1, -1))
            }
        });
        let answers = join_all(lookups).await;
        let partitions = topic
            .partitions
            .iter()
            .zip(answers)
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
    let Some(log) = shard.log(topic, partition) else {
        return (ResponseError::UnknownTopicOrPartition.code(), -1, -1);
    };
    match timestamp {
        EARLIEST_TIMESTAMP => (0, -1, log.log_start_offset()),
        LATEST_TIMESTAMP => (0, -1, log.high_watermark()),
        MAX_TIMESTAMP => match log.max_timestamp() {
            Some((offset, ts)) => (0, ts, offset),
            None => (0, -1, -1),
        },
        ts if ts < 0 => (ResponseError::InvalidRequest.code(), -1, -1),
        ts => match log.offset_for_timestamp(ts).await {
            Ok(Some((offset, found_ts))) => (0, found_ts, offset),
            Ok(None) => (0, -1, -1),
            Err(e) => (engine_error_code(&e).code(), -1, -1),
        },
    }
}
