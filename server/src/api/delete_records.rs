//! DeleteRecords (v0-v2): moves each partition's log start offset forward
//! (`PartitionLog::delete_records_before`), durably before the answer.
//! Offset -1 means the high watermark, as in Kafka. Compact-only topics
//! refuse it (POLICY_VIOLATION), as Kafka's do: their records go only
//! through compaction.

use std::rc::Rc;

use futures_util::future::join_all;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};
use kafka_protocol::ResponseError;

use super::produce::engine_error_code;
use crate::scatter::scatter_gather;
use crate::shard::Shard;

/// Kafka's "delete up to the high watermark".
const HIGH_WATERMARK_OFFSET: i64 = -1;

/// (error code, low watermark)
type Answer = (i16, i64);

struct Deletion {
    topic: String,
    partition: i32,
    offset: i64,
}

pub async fn handle(
    shard: &Rc<Shard>,
    req: DeleteRecordsRequest,
    _version: i16,
) -> DeleteRecordsResponse {
    let mut deletions = Vec::new();
    for topic in &req.topics {
        let name = topic.name.0.as_str();
        for p in &topic.partitions {
            let d = Deletion {
                topic: name.to_string(),
                partition: p.partition_index,
                offset: p.offset,
            };
            deletions.push((shard.owner(name, p.partition_index), d));
        }
    }
    let mut answers = scatter_gather(shard, deletions, |owner, group: Vec<Deletion>| async move {
        join_all(group.iter().map(|d| delete_local(&owner, d))).await
    })
    .await
    .into_iter()
    .map(|answer| answer.unwrap_or((ResponseError::NotLeaderOrFollower.code(), -1)));

    let topics = req
        .topics
        .into_iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .zip(answers.by_ref())
                .map(|(p, (error, low_watermark))| {
                    DeleteRecordsPartitionResult::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(error)
                        .with_low_watermark(low_watermark)
                })
                .collect();
            DeleteRecordsTopicResult::default()
                .with_name(topic.name)
                .with_partitions(partitions)
        })
        .collect();
    DeleteRecordsResponse::default().with_topics(topics)
}

async fn delete_local(shard: &Shard, d: &Deletion) -> Answer {
    let log = match shard.served_log(&d.topic, d.partition) {
        Ok(log) => log,
        Err(e) => return (e.code(), -1),
    };
    let config = log.config();
    if config.cleanup_compact && !config.cleanup_delete {
        return (ResponseError::PolicyViolation.code(), -1);
    }
    let offset = if d.offset == HIGH_WATERMARK_OFFSET {
        log.high_watermark()
    } else {
        d.offset
    };
    match log.delete_records_before(offset).await {
        Ok(low_watermark) => (0, low_watermark),
        Err(e) => (engine_error_code(&e).code(), -1),
    }
}
