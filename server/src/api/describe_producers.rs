//! DescribeProducers (v0): each partition's idempotent producers, from the
//! partition's producer state (`strom_engine::producer_state`): id, epoch,
//! last sequence and last timestamp. No transactions yet, so no producer
//! has a coordinator epoch or an open transaction (-1 for both).

use std::rc::Rc;

use futures_util::future::join_all;
use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::{DescribeProducersRequest, DescribeProducersResponse, ProducerId};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use crate::scatter::scatter_gather;
use crate::shard::Shard;

pub async fn handle(
    shard: &Rc<Shard>,
    req: DescribeProducersRequest,
    _version: i16,
) -> DescribeProducersResponse {
    let mut lookups = Vec::new();
    for topic in &req.topics {
        let name = topic.name.0.as_str();
        for &p in &topic.partition_indexes {
            lookups.push((shard.owner(name, p), (name.to_string(), p)));
        }
    }
    let mut answers = scatter_gather(
        shard,
        lookups,
        |owner, group: Vec<(String, i32)>| async move {
            join_all(group.iter().map(|(t, p)| describe_local(&owner, t, *p))).await
        },
    )
    .await
    .into_iter();

    let topics = req
        .topics
        .into_iter()
        .map(|topic| {
            let partitions = topic
                .partition_indexes
                .iter()
                .zip(answers.by_ref())
                .map(|(&p, answer)| {
                    let r = PartitionResponse::default().with_partition_index(p);
                    match answer {
                        Ok(Ok(producers)) => r.with_active_producers(producers),
                        Ok(Err(e)) => r.with_error_code(e.code()),
                        Err(e) => r
                            .with_error_code(ResponseError::NotLeaderOrFollower.code())
                            .with_error_message(Some(StrBytes::from_string(e.to_string()))),
                    }
                })
                .collect();
            TopicResponse::default()
                .with_name(topic.name)
                .with_partitions(partitions)
        })
        .collect();
    DescribeProducersResponse::default().with_topics(topics)
}

async fn describe_local(
    shard: &Shard,
    topic: &str,
    partition: i32,
) -> Result<Vec<ProducerState>, ResponseError> {
    let log = shard.served_log(topic, partition)?;
    Ok(log
        .producers()
        .into_iter()
        .map(|(id, e)| {
            ProducerState::default()
                .with_producer_id(ProducerId(id))
                .with_producer_epoch(i32::from(e.epoch))
                .with_last_sequence(e.last_seq())
                .with_last_timestamp(e.last_timestamp_ms)
                .with_coordinator_epoch(-1)
                .with_current_txn_start_offset(-1)
        })
        .collect())
}
