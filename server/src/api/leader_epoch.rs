//! OffsetForLeaderEpoch (v2-v4). On one node every partition has had one
//! leader epoch, 0, since it was created (Metadata and ListOffsets say so),
//! so the end offset of epoch 0 is the partition's read bound, and any other
//! epoch is unknown. Consumers (KIP-320) use it to detect truncation after
//! a seek to a position that carries an epoch; the cluster issue builds the
//! multi-epoch answer on the engine's leader-epoch checkpoint.

use std::rc::Rc;

use futures_util::future::join_all;
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};
use kafka_protocol::ResponseError;

use crate::scatter::scatter_gather;
use crate::shard::Shard;

/// The only leader epoch a partition has on one node; in a cluster the
/// metadata's.
const SINGLE_NODE_LEADER_EPOCH: i32 = 0;
/// Kafka's answer for an epoch the leader does not know.
const UNDEFINED_EPOCH: i32 = -1;
const UNDEFINED_EPOCH_OFFSET: i64 = -1;

/// (topic, partition, current_leader_epoch, leader_epoch)
type Query = (String, i32, i32, i32);

pub async fn handle(
    shard: &Rc<Shard>,
    req: OffsetForLeaderEpochRequest,
    _version: i16,
) -> OffsetForLeaderEpochResponse {
    let mut queries = Vec::new();
    for t in &req.topics {
        let name = t.topic.0.as_str();
        for p in &t.partitions {
            let q: Query = (
                name.to_string(),
                p.partition,
                p.current_leader_epoch,
                p.leader_epoch,
            );
            queries.push((shard.owner(name, p.partition), q));
        }
    }
    let mut answers = scatter_gather(shard, queries, |owner, group: Vec<Query>| async move {
        join_all(group.iter().map(|q| async { answer(&owner, q) })).await
    })
    .await
    .into_iter()
    .map(|a| a.unwrap_or_else(|_| error(ResponseError::NotLeaderOrFollower)));
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .zip(answers.by_ref())
                .map(|(p, a)| a.with_partition(p.partition))
                .collect();
            OffsetForLeaderTopicResult::default()
                .with_topic(t.topic)
                .with_partitions(partitions)
        })
        .collect();
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}

fn error(e: ResponseError) -> EpochEndOffset {
    EpochEndOffset::default()
        .with_error_code(e.code())
        .with_leader_epoch(UNDEFINED_EPOCH)
        .with_end_offset(UNDEFINED_EPOCH_OFFSET)
}

fn answer(shard: &Shard, (topic, partition, current_epoch, epoch): &Query) -> EpochEndOffset {
    let log = match shard.served_log(topic, *partition) {
        Ok(log) => log,
        Err(e) => return error(e),
    };
    let leader_epoch = crate::cluster::partition_state(&shard.metadata(), topic, *partition)
        .map_or(SINGLE_NODE_LEADER_EPOCH, |s| s.leader_epoch);
    // -1: the client does not check the leader's epoch. A newer epoch than
    // the leader's is one this leader has not heard of, an older one is
    // fenced, as Kafka answers them.
    if *current_epoch > leader_epoch {
        return error(ResponseError::UnknownLeaderEpoch);
    }
    if *current_epoch >= 0 && *current_epoch < leader_epoch {
        return error(ResponseError::FencedLeaderEpoch);
    }
    // One replica per partition: a log never diverges from an older
    // leader's (the leader only changes between this broker and none), so
    // every epoch up to the current one ends at the log's end.
    if (0..=leader_epoch).contains(epoch) {
        EpochEndOffset::default()
            .with_leader_epoch(*epoch)
            .with_end_offset(log.high_watermark())
    } else {
        EpochEndOffset::default()
            .with_leader_epoch(UNDEFINED_EPOCH)
            .with_end_offset(UNDEFINED_EPOCH_OFFSET)
    }
}
