//! A follower whose log end fell below its leader's log start (retention or
//! DeleteRecords moved it while the follower was away): its fetch is
//! answered OFFSET_OUT_OF_RANGE, and nothing it holds can be continued.
//! It asks the leader for its log start (ListOffsets, earliest) and starts
//! again, empty, there (`Shard::start_replica_again_at`, Kafka's
//! `truncateFullyAndStartAt`). The leader's log start can fall inside a
//! batch, and the leader then answers with the whole batch: a replica
//! still empty starts again at that batch's base offset, as Kafka's
//! fetcher does on `UnexpectedAppendOffsetException`.

use std::time::Duration;

use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{
    ApiKey, BrokerId, ListOffsetsRequest, ListOffsetsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use strom_engine::batch::BatchHeader;
use strom_engine::PartitionLog;

use crate::metadata::INTERNAL_TOPICS;
use crate::replica::client::BrokerClient;
use crate::shard::Shard;

const LIST_OFFSETS_VERSION: i16 = 1;
const EARLIEST: i64 = -2;
const REQUEST_LIMIT: Duration = Duration::from_secs(5);

/// The leader's log start offset for the partition.
async fn leader_log_start(
    client: &mut BrokerClient,
    topic: &str,
    partition: i32,
) -> anyhow::Result<i64> {
    let req = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(partition)
                .with_timestamp(EARLIEST)])]);
    let resp: ListOffsetsResponse = client
        .call(
            ApiKey::ListOffsets,
            LIST_OFFSETS_VERSION,
            &req,
            REQUEST_LIMIT,
        )
        .await?;
    let p = resp
        .topics
        .first()
        .and_then(|t| t.partitions.first())
        .ok_or_else(|| anyhow::anyhow!("ListOffsets answered no partition"))?;
    if p.error_code != 0 {
        anyhow::bail!("ListOffsets answered error {}", p.error_code);
    }
    Ok(p.offset)
}

/// After OFFSET_OUT_OF_RANGE: the replica's new log when it started again
/// at the leader's log start, or `None` when its log end is not below it
/// (the leader may have been behind for a moment; the fetch is retried).
pub async fn after_out_of_range(
    shard: &Shard,
    client: &mut BrokerClient,
    topic: &str,
    partition: i32,
    log: &PartitionLog,
) -> anyhow::Result<Option<PartitionLog>> {
    if INTERNAL_TOPICS.contains(&topic) {
        return Ok(None);
    }
    let start = leader_log_start(client, topic, partition).await?;
    let end = log.log_end_offset();
    if start <= end {
        tracing::info!(
            topic,
            partition,
            end,
            leader_start = start,
            "fetch offset out of range, but not below the leader's log start"
        );
        return Ok(None);
    }
    tracing::warn!(
        topic,
        partition,
        end,
        leader_start = start,
        "this replica ends below its leader's log start"
    );
    Ok(Some(
        shard
            .start_replica_again_at(topic, partition, start)
            .await?,
    ))
}

/// A replica that is still empty was sent a batch that starts below its
/// start and holds it (the leader's log start falls inside that batch):
/// the new log, started again at the batch's base offset.
pub async fn at_first_batch(
    shard: &Shard,
    topic: &str,
    partition: i32,
    log: &PartitionLog,
    records: &[u8],
) -> anyhow::Result<Option<PartitionLog>> {
    let (start, end) = (log.log_start_offset(), log.log_end_offset());
    // Only an empty replica is checked: every fetch answer comes here.
    if start != end {
        return Ok(None);
    }
    let Ok(first) = BatchHeader::parse(records) else {
        return Ok(None);
    };
    if first.base_offset >= end || first.last_offset() < end {
        return Ok(None);
    }
    Ok(Some(
        shard
            .start_replica_again_at(topic, partition, first.base_offset)
            .await?,
    ))
}
