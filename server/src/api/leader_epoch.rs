//! OffsetForLeaderEpoch (v2-v4), answered by the partition's leader from
//! its log's leader epoch cache (`strom_engine::leader_epoch`, Kafka's
//! rules): the end offset of an epoch is where the next larger epoch
//! starts, or the log end for the latest; an unknown epoch gets the largest
//! one below it, one newer than all gets UNDEFINED (-1, -1). On one node
//! every partition is led at epoch 0. Consumers (KIP-320, replica id -1)
//! and followers (KIP-101/279) get the same answer, as from Kafka's
//! `Partition.lastOffsetForLeaderEpoch`: the end is not bounded by the high
//! watermark. A new leader's high watermark can lag what its predecessor
//! had committed and consumers had read (it learns it with the next fetch
//! round, or after a restart from its followers' fetches, from the log
//! start up); a consumer told an end below its position takes it for a
//! truncation and reads again from there, delivering records twice.

use std::rc::Rc;

use futures_util::future::join_all;
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};
use kafka_protocol::ResponseError;

use crate::scatter::scatter_gather;
use crate::shard::Shard;

use strom_engine::leader_epoch::{UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET};

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
    if let Err(e) = crate::cluster::check_current_leader_epoch(
        &shard.metadata(),
        topic,
        *partition,
        *current_epoch,
    ) {
        return error(e);
    }
    let (found_epoch, end_offset) = log.end_offset_for_epoch(*epoch);
    EpochEndOffset::default()
        .with_leader_epoch(found_epoch)
        .with_end_offset(end_offset)
}
