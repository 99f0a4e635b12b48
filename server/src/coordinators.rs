//! Each shard's group coordinator, and the way to it from any shard.
//!
//! Each shard runs one [`GroupCoordinator`] (kept in a thread-local: a shard
//! is one executor thread) over the `__consumer_offsets` partitions placed
//! on it by the broker's placement rule. A group request is decoded on the
//! connection's shard (`api::groups`) and run on the shard owning the
//! group's offsets partition through the shard job mesh (`Shard::run_on`).

use std::cell::RefCell;
use std::future::Future;
use std::rc::{Rc, Weak};

use strom_engine::{EngineError, LogConfig, PartitionLog};

use crate::group::codes::{COORDINATOR_LOAD_IN_PROGRESS, NOT_COORDINATOR};
use crate::group::{
    offsets_partition_for, system_clock, GroupCoordinator, TopicLookup, OFFSETS_TOPIC,
};
use crate::metadata::{owner_shard, partition_dir};
use crate::shard::Shard;

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
    let coord = GroupCoordinator::new(
        config,
        logs,
        Rc::new(ShardTopics(Rc::downgrade(shard))),
        system_clock(),
    );
    LOCAL.with(|c| *c.borrow_mut() = Some(coord.clone()));
    coord.load().await?;
    coord.spawn_timer().detach();
    tracing::info!(
        shard = shard.id,
        partitions = owned,
        "group coordinator loaded"
    );
    Ok(())
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
