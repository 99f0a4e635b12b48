//! Each shard's group coordinator, and the way to it from any shard.
//!
//! Each shard runs one [`GroupCoordinator`] (kept in a thread-local: a shard
//! is one executor thread) over the `__consumer_offsets` partitions placed
//! on it by the broker's placement rule. Their logs are also the shard's
//! logs of `__consumer_offsets`, so they replicate like any partition; in
//! a cluster the coordinator answers for the partitions this node leads,
//! loading each when elected and dropping it when it moves
//! ([`on_leadership`]). A group request is decoded on the
//! connection's shard (`api::groups`) and run on the shard owning the
//! group's offsets partition through the shard job mesh (`Shard::run_on`).

use std::cell::RefCell;
use std::future::Future;
use std::rc::{Rc, Weak};

use std::collections::BTreeMap;
use std::time::Duration;

use kafka_protocol::ResponseError;
use strom_engine::{EngineError, LogConfig, PartitionLog};

use crate::group::codes::{
    COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR, REQUEST_TIMED_OUT,
    UNKNOWN_SERVER_ERROR,
};
use crate::group::{
    offsets_partition_for, system_clock, GroupCoordinator, ReplicatedWait, TopicLookup,
    OFFSETS_TOPIC,
};
use crate::metadata::{owner_shard, partition_dir};
use crate::shard::Shard;

/// How long an offset commit waits for the in-sync replicas of its
/// `__consumer_offsets` partition (Kafka's `offsets.commit.timeout.ms`
/// default).
const OFFSETS_COMMIT_TIMEOUT: Duration = Duration::from_millis(5000);

thread_local! {
    static LOCAL: RefCell<Option<GroupCoordinator>> = const { RefCell::new(None) };
}

/// This shard's coordinator, once started.
pub fn local() -> Option<GroupCoordinator> {
    LOCAL.with(|c| c.borrow().clone())
}

/// The log config of `__consumer_offsets` partitions: compact-only, as in
/// Kafka (the shard's cleaner compacts them), so never deleted by time or size (offsets expire by their own
/// retention, as tombstones), small segments not preallocated, since most of
/// the 50 partitions stay tiny.
fn offsets_log_config(segment_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        retention_ms: -1,
        cleanup_delete: false,
        cleanup_compact: true,
        preallocate: false,
        ..LogConfig::default()
    }
}

/// Opens (recovering) this shard's `__consumer_offsets` partitions, replays
/// them and starts the coordinator with its timer.
pub async fn start_shard(shard: &Rc<Shard>) -> Result<(), EngineError> {
    let config = shard.config.groups.clone();
    let mut logs = Vec::new();
    for p in 0..config.offsets_topic_num_partitions {
        if owner_shard(OFFSETS_TOPIC, p, shard.shards) != shard.id {
            continue;
        }
        let dir = partition_dir(&shard.config.data_dir, OFFSETS_TOPIC, p);
        logs.push((
            p,
            PartitionLog::open(&dir, offsets_log_config(config.offsets_topic_segment_bytes))
                .await?,
        ));
    }
    let owned = logs.len();
    // Registered as the shard's logs of `__consumer_offsets`, so that they
    // are replicated like any partition's (followers fetch them, the
    // leader serves them and tracks its ISR), ticked and cleaned.
    shard.register_internal_logs(OFFSETS_TOPIC, logs.clone());
    let coord = GroupCoordinator::new(
        config,
        logs,
        Rc::new(ShardTopics(Rc::downgrade(shard))),
        system_clock(),
    );
    LOCAL.with(|c| *c.borrow_mut() = Some(coord.clone()));
    if shard.config.cluster.enabled() {
        // Partitions load as the images make this node their leader.
        coord.start_unloaded();
        on_leadership(shard);
    } else {
        coord.load().await?;
    }
    coord.spawn_timer().detach();
    tracing::info!(
        shard = shard.id,
        partitions = owned,
        "group coordinator loaded"
    );
    Ok(())
}

/// After a new image is installed on the shard (in a cluster): this
/// shard's coordinator unloads the `__consumer_offsets` partitions this
/// node no longer leads and loads, in the background, the ones it now
/// leads (or leads at a new epoch), as Kafka's onResignation / onElection.
/// Before the first image, with leadership unknown, it leads none.
pub fn on_leadership(shard: &Rc<Shard>) {
    let Some(coord) = local() else {
        return;
    };
    let meta = shard.metadata();
    let led: BTreeMap<i32, i32> = if meta.cluster.is_none() {
        BTreeMap::new()
    } else {
        coord
            .partitions()
            .into_iter()
            .filter_map(|p| {
                crate::cluster::led_at_epoch(&meta, shard.config.node_id, OFFSETS_TOPIC, p)
                    .map(|epoch| (p, epoch))
            })
            .collect()
    };
    for pending in coord.on_leadership(&led) {
        let coord = coord.clone();
        glommio::spawn_local(async move {
            if let Err(e) = coord.load_partition(pending).await {
                tracing::error!(
                    partition = pending.partition,
                    "loading {OFFSETS_TOPIC} partition failed: {e}"
                );
            }
        })
        .detach();
    }
}

/// Stops the coordinator and closes its logs (clean-shutdown markers).
pub async fn stop_shard() {
    let coord = LOCAL.with(|c| c.borrow_mut().take());
    if let Some(coord) = coord {
        coord.close().await;
    }
}

/// Answers topic questions from the shard's metadata snapshot.
struct ShardTopics(Weak<Shard>);

impl TopicLookup for ShardTopics {
    fn partition_exists(&self, topic: &str, partition: i32) -> bool {
        let Some(shard) = self.0.upgrade() else {
            return false;
        };
        let meta = shard.metadata();
        meta.topics
            .get(topic)
            .is_some_and(|t| partition >= 0 && partition < t.partitions)
    }

    /// In a cluster, waits for the in-sync replicas as acks=all does (at
    /// most `OFFSETS_COMMIT_TIMEOUT`), and answers as Kafka's
    /// GroupMetadataManager maps the append's error for a commit.
    fn wait_replicated(&self, partition: i32, log: &PartitionLog, end: i64) -> ReplicatedWait {
        let shard = self.0.clone();
        let log = log.clone();
        Box::pin(async move {
            let Some(shard) = shard.upgrade() else {
                return Err(NOT_COORDINATOR);
            };
            if shard.metadata().cluster.is_none() {
                return Ok(());
            }
            crate::replica::leader::wait_replicated(
                &shard,
                OFFSETS_TOPIC,
                partition,
                &log,
                end,
                OFFSETS_COMMIT_TIMEOUT,
            )
            .await
            .map_err(|(e, why)| {
                tracing::warn!(partition, "offset commit not replicated: {why}");
                match e {
                    ResponseError::NotLeaderOrFollower | ResponseError::KafkaStorageError => {
                        NOT_COORDINATOR
                    }
                    ResponseError::NotEnoughReplicas
                    | ResponseError::NotEnoughReplicasAfterAppend
                    | ResponseError::UnknownTopicOrPartition => COORDINATOR_NOT_AVAILABLE,
                    ResponseError::RequestTimedOut => REQUEST_TIMED_OUT,
                    _ => UNKNOWN_SERVER_ERROR,
                }
            })
        })
    }
}

fn coordinator_shard(shard: &Shard, group_id: &str) -> usize {
    let p = offsets_partition_for(group_id, shard.config.groups.offsets_topic_num_partitions);
    owner_shard(OFFSETS_TOPIC, p, shard.shards)
}

/// Runs `f` with the coordinator of `group_id`, on its shard. The error
/// code otherwise: NOT_COORDINATOR when, in a cluster, another broker
/// leads the group's offsets partition (or this one is fenced); the
/// retriable COORDINATOR_LOAD_IN_PROGRESS when the shard or its
/// coordinator is not there (starting or stopping).
pub async fn on_coordinator<T, F, Fut>(shard: &Rc<Shard>, group_id: &str, f: F) -> Result<T, i16>
where
    T: Send + 'static,
    F: FnOnce(GroupCoordinator) -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
{
    let p = offsets_partition_for(group_id, shard.config.groups.offsets_topic_num_partitions);
    match crate::cluster::offsets_coordinator(&shard.metadata(), p) {
        Ok(None) => {}
        Ok(Some((leader, _, _))) if leader == shard.config.node_id => {}
        _ => return Err(NOT_COORDINATOR),
    }
    let target = coordinator_shard(shard, group_id);
    let out = shard
        .run_on(target, move |_| async move {
            match local() {
                Some(coord) => Some(f(coord).await),
                None => None,
            }
        })
        .await;
    out.ok().flatten().ok_or(COORDINATOR_LOAD_IN_PROGRESS)
}
