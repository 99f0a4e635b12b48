//! Produce (v3-v10; v10's KIP-951 leader hints are `api::leader_hints`): partitions are grouped by owner shard, each group is
//! appended on its shard (concurrently, so acks=all appends share a group
//! commit), and the response is assembled in request order. The
//! connection is told as soon as every partition's records have their
//! offsets, so its next request is appended while this one waits for the
//! device (and the replicas). Batches are
//! validated by the engine (length, magic, CRC32C) and never decoded,
//! except in two cases: compacted topics, whose records' keys are read (a
//! record without a key is refused: INVALID_RECORD with KIP-467 record
//! errors), and topics that validate records against the schema registry
//! (`api::schema_validation`).

use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use futures_channel::oneshot;
use futures_util::future::{join, join_all};
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use strom_engine::{AppendInfo, AppendOrigin, BatchError, Durability, EngineError, PartitionLog};

use crate::api::produce_refusals;
use crate::clock::now_ms;
use crate::scatter::scatter_gather;
use crate::shard::Shard;
use crate::stages::Stage;

/// Outcome of appending one partition's records.
#[derive(Debug, Clone)]
pub struct AppendOutcome {
    pub error: Option<ResponseError>,
    pub message: Option<String>,
    pub base_offset: i64,
    pub log_append_time_ms: i64,
    pub log_start_offset: i64,
    /// KIP-467: the records (by index in the request's records) that made
    /// the batch fail, with why.
    pub record_errors: Vec<(i32, String)>,
}

impl AppendOutcome {
    fn error(error: ResponseError, message: impl Into<String>) -> AppendOutcome {
        AppendOutcome {
            error: Some(error),
            message: Some(message.into()),
            base_offset: -1,
            log_append_time_ms: -1,
            log_start_offset: -1,
            record_errors: Vec::new(),
        }
    }
}

/// Kafka's LogValidator shows at most this many record errors in the
/// partition's error message.
const RECORD_ERRORS_IN_MESSAGE: usize = 3;

/// The outcome of a batch refused for keyless records in a compacted topic.
fn keyless_refusal(topic: &str, partition: i32, keyless: &[i32]) -> AppendOutcome {
    let why = format!(
        "Compacted topic cannot accept message without key in topic partition {topic}-{partition}."
    );
    let shown: Vec<String> = keyless
        .iter()
        .take(RECORD_ERRORS_IN_MESSAGE)
        .map(|i| format!("RecordError(batchIndex={i}, message='{why}')"))
        .collect();
    let message = format!(
        "One or more records have been rejected due to {} record errors in total, and only showing the first three errors at most: [{}]",
        keyless.len(),
        shown.join(", ")
    );
    AppendOutcome {
        record_errors: keyless.iter().map(|&i| (i, why.clone())).collect(),
        ..AppendOutcome::error(ResponseError::InvalidRecord, message)
    }
}

/// One partition's records, in request order.
struct Item {
    topic: String,
    partition: i32,
    records: Option<Bytes>,
    /// Sent to once the records have their offsets; dropped unsent when
    /// they are refused before.
    assigned: oneshot::Sender<()>,
}

/// Maps an engine error to the Kafka error a producer expects.
pub fn engine_error_code(e: &EngineError) -> ResponseError {
    match e {
        EngineError::Batch(BatchError::TooLarge { .. }) => ResponseError::MessageTooLarge,
        // Kafka's log validator answers these with INVALID_RECORD: the batch
        // is intact but breaks a rule (its error message says which).
        EngineError::Batch(
            BatchError::InconsistentOffsetRange { .. }
            | BatchError::RecordCountTooLarge { .. }
            | BatchError::ControlBatch
            | BatchError::Transactional
            | BatchError::InvalidProducerFields { .. },
        ) => ResponseError::InvalidRecord,
        EngineError::Batch(BatchError::TimestampOutOfRange { .. }) => {
            ResponseError::InvalidTimestamp
        }
        EngineError::Batch(_) => ResponseError::CorruptMessage,
        EngineError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        // A closed log belongs to a topic being deleted or a broker shutting
        // down; clients retry NOT_LEADER_OR_FOLLOWER after a metadata refresh.
        EngineError::Closed => ResponseError::NotLeaderOrFollower,
        // Only a replica append meets it, and no client sends those.
        EngineError::LedHere { .. } => ResponseError::NotLeaderOrFollower,
        // Idempotent producers. A duplicate is no error: the engine answers
        // it with the original offsets.
        EngineError::Producer(p) => crate::producer_ids::produce_error(p),
        EngineError::NoSpace | EngineError::Corrupt(_) | EngineError::Io(_) => {
            ResponseError::KafkaStorageError
        }
    }
}

/// `assigned` is sent to once every partition's records have their
/// offsets, or have been refused (see `api::handle_frame_staged`).
pub async fn handle(
    shard: &Rc<Shard>,
    req: ProduceRequest,
    _version: i16,
    assigned: Option<oneshot::Sender<()>>,
) -> Option<ProduceResponse> {
    let durability = match req.acks {
        0 => Ok(Durability::Buffered),
        1 => Ok(Durability::Written),
        -1 => Ok(Durability::Synced),
        _ => Err(ResponseError::InvalidRequiredAcks),
    };
    let mut items = Vec::new();
    let mut shape = Vec::new();
    let mut each_assigned = Vec::new();
    for topic in req.topic_data {
        let name = topic.name.0.as_str().to_string();
        let mut partitions = Vec::new();
        for p in topic.partition_data {
            partitions.push(p.index);
            let (tx, rx) = oneshot::channel();
            each_assigned.push(rx);
            items.push(Item {
                topic: name.clone(),
                partition: p.index,
                records: p.records,
                assigned: tx,
            });
        }
        shape.push((name, partitions));
    }
    // Fired when every item's sender has been sent to or dropped.
    let all_assigned = async move {
        join_all(each_assigned).await;
        if let Some(tx) = assigned {
            let _ = tx.send(());
        }
    };

    // acks=all's wait for the replicas (Kafka's request timeout_ms).
    let timeout = Duration::from_millis(u64::try_from(req.timeout_ms).unwrap_or(0));
    let appended = async move {
        match durability {
            Ok(durability) => append_all(shard, items, durability, timeout).await,
            Err(e) => items
                .iter()
                .map(|_| AppendOutcome::error(e, "acks must be -1, 0 or 1"))
                .collect(),
        }
    };
    let (outcomes, ()) = join(appended, all_assigned).await;
    if req.acks == 0 {
        return None;
    }

    let mut outcomes = outcomes.into_iter();
    let responses = shape
        .into_iter()
        .map(|(name, partitions)| {
            let partition_responses = partitions
                .into_iter()
                .map(|index| {
                    let o = outcomes.next().unwrap_or_else(|| {
                        AppendOutcome::error(ResponseError::UnknownServerError, "")
                    });
                    PartitionProduceResponse::default()
                        .with_index(index)
                        .with_error_code(o.error.map_or(0, |e| e.code()))
                        .with_base_offset(o.base_offset)
                        .with_log_append_time_ms(o.log_append_time_ms)
                        .with_log_start_offset(o.log_start_offset)
                        .with_record_errors(
                            o.record_errors
                                .into_iter()
                                .map(|(i, why)| {
                                    BatchIndexAndErrorMessage::default()
                                        .with_batch_index(i)
                                        .with_batch_index_error_message(Some(
                                            StrBytes::from_string(why),
                                        ))
                                })
                                .collect(),
                        )
                        .with_error_message(
                            o.message
                                .filter(|_| o.error.is_some())
                                .map(StrBytes::from_string),
                        )
                })
                .collect();
            TopicProduceResponse::default()
                .with_name(kafka_protocol::messages::TopicName(StrBytes::from_string(
                    name,
                )))
                .with_partition_responses(partition_responses)
        })
        .collect();
    Some(ProduceResponse::default().with_responses(responses))
}

/// Appends every item on its owner shard; outcomes in item order.
async fn append_all(
    shard: &Rc<Shard>,
    items: Vec<Item>,
    durability: Durability,
    timeout: Duration,
) -> Vec<AppendOutcome> {
    let items = items
        .into_iter()
        .map(|item| (shard.owner(&item.topic, item.partition), item))
        .collect();
    scatter_gather(shard, items, move |owner, group: Vec<Item>| async move {
        join_all(
            group
                .into_iter()
                .map(|item| append_local(&owner, item, durability, timeout)),
        )
        .await
    })
    .await
    .into_iter()
    .map(|outcome| {
        outcome.unwrap_or_else(|e| {
            AppendOutcome::error(ResponseError::NotLeaderOrFollower, e.to_string())
        })
    })
    .collect()
}

/// acks=all needs `min.insync.replicas` in-sync replicas before anything
/// is appended (NOT_ENOUGH_REPLICAS, retriable, as Kafka answers even on
/// one broker). On one node the ISR is the node itself.
fn check_min_insync(
    shard: &Shard,
    topic: &str,
    partition: i32,
    log: &PartitionLog,
) -> Result<(), AppendOutcome> {
    let isr = crate::cluster::partition_state(&shard.metadata(), topic, partition)
        .map_or(1, |s| s.isr.len());
    let min_isr = log.config().min_insync_replicas;
    if i64::try_from(isr).unwrap_or(i64::MAX) >= i64::from(min_isr) {
        return Ok(());
    }
    Err(AppendOutcome::error(
        ResponseError::NotEnoughReplicas,
        format!(
            "the in-sync replicas of {topic}-{partition} ({isr}) are fewer than min.insync.replicas ({min_isr})"
        ),
    ))
}

/// Appends one partition's records on the shard that owns it.
async fn append_local(
    shard: &Shard,
    item: Item,
    durability: Durability,
    timeout: Duration,
) -> AppendOutcome {
    if let Err(msg) = crate::metadata::validate_topic_name(&item.topic) {
        return AppendOutcome::error(ResponseError::InvalidTopicException, msg);
    }
    let log = match shard.served_log(&item.topic, item.partition) {
        Ok(log) => log,
        Err(e) => {
            let why = if e == ResponseError::NotLeaderOrFollower {
                "is led by another broker"
            } else {
                "is not hosted here"
            };
            let records = item.records.as_deref().unwrap_or_default();
            produce_refusals::remember(&item.topic, item.partition, records, e);
            return AppendOutcome::error(e, format!("{}-{} {why}", item.topic, item.partition));
        }
    };
    let Some(records) = item.records.filter(|r| !r.is_empty()) else {
        return AppendOutcome::error(ResponseError::CorruptMessage, "no records");
    };
    if durability == Durability::Synced {
        if let Err(refusal) = check_min_insync(shard, &item.topic, item.partition, &log) {
            if let Some(e) = refusal.error {
                produce_refusals::remember(&item.topic, item.partition, &records, e);
            }
            return refusal;
        }
    }
    if log.compacted() {
        // A compacted topic refuses records without a key, as Kafka's
        // LogValidator does; only compacted topics' keys are read.
        let keyless = strom_engine::records::keyless_in_batches(&records);
        if !keyless.is_empty() {
            return keyless_refusal(&item.topic, item.partition, &keyless);
        }
    }
    if let Err(msg) = crate::api::schema_validation::check(shard, &item.topic, &records) {
        return AppendOutcome::error(ResponseError::InvalidRecord, msg);
    }
    let assigned = item.assigned;
    let result = log
        .append_staged(
            &records,
            durability,
            now_ms(),
            AppendOrigin::Client,
            move || {
                let _ = assigned.send(());
            },
        )
        .await;
    if let Ok(info) = &result {
        if crate::stages::enabled() {
            crate::stages::record_duration(Stage::AppendRoom, info.waited.room);
            crate::stages::record_duration(Stage::AppendDurable, info.waited.durable);
        }
    }
    match result {
        Ok(info) if durability == Durability::Synced => {
            // On this disk; in a cluster also on every in-sync replica's
            // (a duplicate's original batch too), as Kafka's delayed produce
            // waits for the high watermark.
            let end = info.last_offset.saturating_add(1);
            match crate::replica::leader::wait_replicated(
                shard,
                &item.topic,
                item.partition,
                &log,
                end,
                timeout,
            )
            .await
            {
                Ok(()) => appended(&info),
                Err((e, why)) => AppendOutcome::error(e, why),
            }
        }
        Ok(info) => appended(&info),
        Err(e) => {
            tracing::debug!(topic = %item.topic, partition = item.partition, "append failed: {e}");
            if let EngineError::Producer(p) = &e {
                if let Some((code, why)) =
                    produce_refusals::explains_gap(&item.topic, item.partition, p)
                {
                    return AppendOutcome::error(code, why);
                }
            }
            AppendOutcome::error(engine_error_code(&e), e.to_string())
        }
    }
}

fn appended(info: &AppendInfo) -> AppendOutcome {
    AppendOutcome {
        error: None,
        message: None,
        base_offset: info.base_offset,
        log_append_time_ms: info.log_append_time_ms,
        log_start_offset: info.log_start_offset,
        record_errors: Vec::new(),
    }
}
