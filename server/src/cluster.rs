//! The broker's side of the controller quorum (`strom-controller`).
//!
//! - `start` runs the controller thread when the config has voters; each
//!   image it applies comes back on a channel that shard 0 follows
//!   (`cluster_publish`).
//! - `metadata_from_image` turns an image into the shards' `Metadata`.
//! - `records_for_change` turns a change the admin APIs made to a copy of
//!   the metadata into KRaft-shaped records, so the admin code is the same
//!   on one node and in a cluster: on one node the copy is persisted, in a
//!   cluster the records are proposed (a follower's proposal is forwarded
//!   to the active controller by Raft) and the change lands when the entry
//!   is applied. The apply rules reject a batch that no longer fits (a
//!   topic created meanwhile through another broker).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};

use anyhow::{anyhow, Context};
use strom_controller::{
    BrokerInfo, ClusterImage, ConfigResource, Controller, ControllerConfig, PartitionState, Record,
};

use kafka_protocol::ResponseError;

use crate::config::BrokerConfig;
use crate::group::codes::COORDINATOR_NOT_AVAILABLE;
use crate::group::OFFSETS_TOPIC;
use crate::metadata::{Metadata, TopicMeta, INTERNAL_TOPICS};
use crate::placement;

/// The controller's directory in the data dir. Partition directories are
/// `<topic>-<number>`, so no partition can have this name.
pub const CONTROLLER_DIR: &str = "strom-controller";

/// The leader epoch of every partition on a single node, since it was
/// created (Metadata and ListOffsets say so).
pub const SINGLE_NODE_LEADER_EPOCH: i32 = 0;

static CONTROLLER: OnceLock<Arc<Controller>> = OnceLock::new();

/// The running controller, in a cluster.
pub fn controller() -> Option<&'static Arc<Controller>> {
    CONTROLLER.get()
}

/// How often a stopping broker looks whether the controller has fenced it.
const CONTROLLED_SHUTDOWN_POLL: std::time::Duration = std::time::Duration::from_millis(20);

/// Controlled shutdown, in a cluster: asks the active controller to fence
/// this broker and move its leadership away, and waits until this node's
/// image shows it fenced, or `max_wait` has passed (no quorum: nothing can
/// move, and the broker stops anyway). Nothing to do on a single node.
pub fn controlled_shutdown(max_wait: std::time::Duration) {
    let Some(controller) = controller() else {
        return;
    };
    let start = std::time::Instant::now();
    controller.request_shutdown();
    while !controller.shutdown_done() {
        if start.elapsed() >= max_wait {
            tracing::warn!(
                max_wait_ms = max_wait.as_millis(),
                "the controller did not fence this broker in time; stopping anyway"
            );
            return;
        }
        std::thread::sleep(CONTROLLED_SHUTDOWN_POLL);
    }
    tracing::info!(
        elapsed_ms = start.elapsed().as_millis(),
        "controlled shutdown: fenced, leadership moved"
    );
}

/// Every image the controller applies, in order.
pub type ImageReceiver = futures_channel::mpsc::UnboundedReceiver<Arc<ClusterImage>>;

/// Starts the controller when voters are configured; `None` on a single
/// node. A single node's topics in `local` are moved into the cluster
/// metadata by `cluster_upgrade` once it runs.
pub fn start(config: &BrokerConfig, local: &Metadata) -> anyhow::Result<Option<ImageReceiver>> {
    if !config.cluster.enabled() {
        return Ok(None);
    }
    let dir = config.data_dir.join(CONTROLLER_DIR);
    let node_id = u64::try_from(config.node_id).context("node.id")?;
    let listen = config
        .cluster
        .controller_address(config.node_id)
        .ok_or_else(|| anyhow!("no controller listener address"))?;
    let (host, port) = config.advertised();
    let (tx, rx) = futures_channel::mpsc::unbounded();
    let controller = Controller::start(
        ControllerConfig {
            node_id,
            voters: config.cluster.voters.clone(),
            listen,
            dir,
            broker: Some(BrokerInfo { host, port }),
            cluster_id_candidate: local.cluster_id.clone(),
            snapshot_every_entries: strom_controller::node::SNAPSHOT_EVERY_ENTRIES,
            fsync: true,
            fixed_election_ticks: None,
            broker_session_timeout_ms: Some(config.cluster.broker_session_timeout_ms()),
            unclean_leader_election_enable: config
                .topic_defaults
                .get(strom_controller::fencing::UNCLEAN_KEY)
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("true")),
        },
        Box::new(move |image| {
            let _ = tx.unbounded_send(image);
        }),
    )
    .context("starting the controller")?;
    CONTROLLER
        .set(Arc::new(controller))
        .map_err(|_| anyhow!("a controller already runs in this process"))?;
    Ok(Some(rx))
}

/// The shards' metadata for an image. Until the cluster id is set, the
/// node's own is shown.
pub fn metadata_from_image(image: Arc<ClusterImage>, local_cluster_id: &str) -> Metadata {
    // The internal topics are the coordinators' (their logs are opened by
    // `coordinators`), as on a single node, where they are not listed.
    let topics = image
        .topics
        .iter()
        .filter(|(name, _)| !INTERNAL_TOPICS.contains(&name.as_str()))
        .map(|(name, t)| {
            let meta = TopicMeta {
                id: t.id,
                partitions: i32::try_from(t.partitions.len()).unwrap_or(i32::MAX),
                configs: t.configs.clone(),
            };
            (name.clone(), meta)
        })
        .collect();
    Metadata {
        version: image.applied_index,
        cluster_id: image
            .cluster_id
            .clone()
            .unwrap_or_else(|| local_cluster_id.to_string()),
        topics,
        // Applied on every node as they arrive, as on one node.
        broker_configs: image.broker_configs.clone(),
        cluster: Some(image),
        new_replicas: BTreeMap::new(),
    }
}

/// The records that take the metadata from `current` to `next`.
/// Partitions are placed on the image's unfenced brokers (`node_id` alone
/// when none has registered yet).
pub fn records_for_change(
    current: &Metadata,
    next: &Metadata,
    image: &ClusterImage,
    node_id: i32,
) -> Vec<Record> {
    let mut brokers: Vec<i32> = image.unfenced_brokers().map(|b| b.broker_id).collect();
    if brokers.is_empty() {
        brokers.push(node_id);
    }
    let mut records = Vec::new();
    for (name, t) in &current.topics {
        if next.topics.get(name).map(|n| n.id) != Some(t.id) {
            records.push(Record::RemoveTopic { topic_id: t.id });
        }
    }
    for (name, t) in &next.topics {
        let old = current.topics.get(name).filter(|o| o.id == t.id);
        let (first_new, old_configs) = match old {
            Some(o) => (o.partitions, &o.configs),
            None => {
                records.push(Record::Topic {
                    name: name.clone(),
                    topic_id: t.id,
                });
                (0, &BTreeMap::new())
            }
        };
        // The admin change planned the new partitions' replicas
        // (`placement::plan`); a change that did not (none does today)
        // gets one replica each.
        let planned = next.new_replicas.get(name);
        for p in first_new.max(0)..t.partitions {
            let replicas = usize::try_from(p.saturating_sub(first_new))
                .ok()
                .and_then(|i| planned?.get(i).cloned())
                .unwrap_or_else(|| placement::assign(name, p, 1, 1, &brokers).concat());
            records.push(placement::partition_record(image, t.id, p, replicas));
        }
        records.extend(config_records(
            ConfigResource::Topic,
            name,
            old_configs,
            &t.configs,
        ));
    }
    records.extend(broker_config_records(
        &current.broker_configs,
        &next.broker_configs,
    ));
    records
}

/// The Config records that take the dynamic broker configs (by resource
/// name: "" for the cluster default, a broker id) from `old` to `new`.
pub fn broker_config_records(
    old: &BTreeMap<String, BTreeMap<String, String>>,
    new: &BTreeMap<String, BTreeMap<String, String>>,
) -> Vec<Record> {
    let empty = BTreeMap::new();
    let names: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    names
        .into_iter()
        .flat_map(|name| {
            let before = old.get(name).unwrap_or(&empty);
            let after = new.get(name).unwrap_or(&empty);
            config_records(ConfigResource::Broker, name, before, after)
        })
        .collect()
}

/// The Config records that take a resource's configs from `old` to `new`.
pub fn config_records(
    resource: ConfigResource,
    resource_name: &str,
    old: &BTreeMap<String, String>,
    new: &BTreeMap<String, String>,
) -> Vec<Record> {
    let set = |name: &String, value: Option<&String>| Record::Config {
        resource,
        resource_name: resource_name.to_string(),
        name: name.clone(),
        value: value.cloned(),
    };
    let removed = old
        .keys()
        .filter(|k| !new.contains_key(*k))
        .map(|k| set(k, None));
    let changed = new
        .iter()
        .filter(|(k, v)| old.get(*k) != Some(*v))
        .map(|(k, v)| set(k, Some(v)));
    removed.chain(changed).collect()
}

/// The partition's state in a cluster's metadata, `None` on one node.
pub fn partition_state<'m>(meta: &'m Metadata, topic: &str, p: i32) -> Option<&'m PartitionState> {
    let image = meta.cluster.as_ref()?;
    let topic = image.topics.get(topic)?;
    topic.partitions.get(usize::try_from(p).ok()?)
}

/// Whether this node may serve partition `p` of `topic`: always on one
/// node; in a cluster only while it leads the partition and is not fenced
/// (NOT_LEADER_OR_FOLLOWER otherwise, so the client refreshes its
/// metadata and goes to the leader). A topic the image does not know is
/// left to the caller (UNKNOWN_TOPIC_OR_PARTITION).
pub fn check_leader(
    meta: &Metadata,
    node_id: i32,
    topic: &str,
    p: i32,
) -> Result<(), ResponseError> {
    let Some(image) = meta.cluster.as_ref() else {
        return Ok(());
    };
    let Some(t) = image.topics.get(topic) else {
        return Ok(());
    };
    let Some(state) = usize::try_from(p).ok().and_then(|i| t.partitions.get(i)) else {
        return Ok(());
    };
    if state.leader != node_id || is_fenced(image, node_id) || image.out_of_contact {
        return Err(ResponseError::NotLeaderOrFollower);
    }
    Ok(())
}

/// KIP-320's check of a request's `current_leader_epoch` (Fetch,
/// OffsetForLeaderEpoch) against the partition's leader epoch (0 on one
/// node): -1 skips it; an older one is FENCED_LEADER_EPOCH (the client
/// missed a leader change and must refresh its metadata, then validate its
/// position), a newer one UNKNOWN_LEADER_EPOCH (this broker has not applied
/// that change yet). Kafka's `Partition.checkCurrentLeaderEpoch`.
///
/// A Fetch sent at an old epoch must not be answered with records: a
/// librdkafka consumer that already started validating its position for
/// the new epoch delivers them, then seeks back to the validated position
/// and delivers them again (the fault run found it).
pub fn check_current_leader_epoch(
    meta: &Metadata,
    topic: &str,
    p: i32,
    current: i32,
) -> Result<(), ResponseError> {
    if current < 0 {
        return Ok(());
    }
    let leader_epoch =
        partition_state(meta, topic, p).map_or(SINGLE_NODE_LEADER_EPOCH, |s| s.leader_epoch);
    match current.cmp(&leader_epoch) {
        std::cmp::Ordering::Less => Err(ResponseError::FencedLeaderEpoch),
        std::cmp::Ordering::Greater => Err(ResponseError::UnknownLeaderEpoch),
        std::cmp::Ordering::Equal => Ok(()),
    }
}

/// The leader epoch at which this node leads partition `p` of `topic`:
/// 0 on one node (its only epoch); in a cluster the image's, while this
/// node is the unfenced leader; `None` when it does not lead it.
pub fn led_at_epoch(meta: &Metadata, node_id: i32, topic: &str, p: i32) -> Option<i32> {
    match partition_state(meta, topic, p) {
        None => meta.cluster.is_none().then_some(SINGLE_NODE_LEADER_EPOCH),
        Some(s) => check_leader(meta, node_id, topic, p)
            .is_ok()
            .then_some(s.leader_epoch),
    }
}

/// Whether this node holds a replica of partition `p` of `topic` (and so
/// keeps its log): always on one node.
pub fn holds_replica(meta: &Metadata, node_id: i32, topic: &str, p: i32) -> bool {
    partition_state(meta, topic, p).is_none_or(|s| s.replicas.contains(&node_id))
}

/// The replicas on fenced or unregistered brokers (Metadata's
/// `offline_replicas`).
pub fn offline_replicas(meta: &Metadata, state: &PartitionState) -> Vec<i32> {
    let Some(image) = meta.cluster.as_ref() else {
        return Vec::new();
    };
    state
        .replicas
        .iter()
        .copied()
        .filter(|b| is_fenced(image, *b))
        .collect()
}

/// A fenced (or unregistered) broker serves no partition.
fn is_fenced(image: &ClusterImage, node_id: i32) -> bool {
    image.brokers.get(&node_id).is_none_or(|b| b.fenced)
}

/// The coordinator of `__consumer_offsets` partition `p` in a cluster: the
/// partition's leader, with its advertised listener. `Ok(None)` on one
/// node (this node coordinates every group); `Err(code)` while there is
/// none (no offsets topic yet, no leader: COORDINATOR_NOT_AVAILABLE).
pub fn offsets_coordinator(meta: &Metadata, p: i32) -> Result<Option<(i32, String, i32)>, i16> {
    let Some(image) = meta.cluster.as_ref() else {
        return Ok(None);
    };
    let leader = image
        .topics
        .get(OFFSETS_TOPIC)
        .and_then(|t| t.partitions.get(usize::try_from(p).ok()?))
        .map(|s| s.leader)
        .ok_or(COORDINATOR_NOT_AVAILABLE)?;
    let b = image
        .brokers
        .get(&leader)
        .filter(|b| !b.fenced)
        .ok_or(COORDINATOR_NOT_AVAILABLE)?;
    Ok(Some((b.broker_id, b.host.clone(), b.port)))
}

/// When the last creation of `__consumer_offsets` was proposed (ms since
/// the epoch), so that a burst of FindCoordinator requests proposes once.
static OFFSETS_TOPIC_PROPOSED_MS: AtomicI64 = AtomicI64::new(0);
/// How long before a creation that did not land is proposed again.
const OFFSETS_TOPIC_RETRY_MS: i64 = 2000;

/// In a cluster, proposes `__consumer_offsets` with `partitions`
/// partitions of `replication_factor` replicas (at most as many as there
/// are unfenced brokers) placed across the unfenced brokers, unless the
/// image has it or a proposal is on its way. Kafka creates it on the first
/// FindCoordinator too; a creation racing another broker's is refused by
/// the apply rules (the topic exists), which is the answer wanted.
pub fn ensure_offsets_topic(
    meta: &Metadata,
    partitions: i32,
    replication_factor: i32,
    now_ms: i64,
) {
    let (Some(image), Some(controller)) = (meta.cluster.as_ref(), controller()) else {
        return;
    };
    if image.topics.contains_key(OFFSETS_TOPIC) {
        return;
    }
    let last = OFFSETS_TOPIC_PROPOSED_MS.load(Ordering::Relaxed);
    if now_ms.saturating_sub(last) < OFFSETS_TOPIC_RETRY_MS
        || OFFSETS_TOPIC_PROPOSED_MS
            .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
    {
        return;
    }
    let brokers: Vec<i32> = image.unfenced_brokers().map(|b| b.broker_id).collect();
    if brokers.is_empty() {
        return;
    }
    let topic_id = uuid::Uuid::new_v4();
    let mut records = vec![Record::Topic {
        name: OFFSETS_TOPIC.to_string(),
        topic_id,
    }];
    let rf = usize::try_from(replication_factor)
        .unwrap_or(1)
        .clamp(1, brokers.len());
    let assigned = placement::assign(OFFSETS_TOPIC, 0, partitions, rf, &brokers);
    records.extend(
        (0..partitions)
            .zip(assigned)
            .map(|(p, replicas)| placement::partition_record(image, topic_id, p, replicas)),
    );
    records.push(Record::Config {
        resource: ConfigResource::Topic,
        resource_name: OFFSETS_TOPIC.to_string(),
        name: "cleanup.policy".to_string(),
        value: Some("compact".to_string()),
    });
    // The outcome shows in the image; the answer is not awaited.
    drop(controller.propose(records));
}

/// The brokers Metadata lists in a cluster: every unfenced one with its
/// advertised listener. `None` on one node.
pub fn brokers(meta: &Metadata) -> Option<Vec<(i32, String, i32)>> {
    let image = meta.cluster.as_ref()?;
    Some(
        image
            .unfenced_brokers()
            .map(|b| (b.broker_id, b.host.clone(), b.port))
            .collect(),
    )
}

/// The active controller's id in a cluster (-1 while none is known).
pub fn controller_id() -> Option<i32> {
    let c = controller()?;
    Some(
        c.leader_id()
            .and_then(|id| i32::try_from(id).ok())
            .unwrap_or(-1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    /// A topic: name, id, partitions, configs.
    type Topic<'a> = (&'a str, Uuid, i32, &'a [(&'a str, &'a str)]);

    fn meta_with(topics: &[Topic<'_>]) -> Metadata {
        let mut m = Metadata::new();
        for (name, id, partitions, configs) in topics {
            m.topics.insert(
                name.to_string(),
                TopicMeta {
                    id: *id,
                    partitions: *partitions,
                    configs: configs
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                },
            );
        }
        m
    }

    /// Applying the records to the image the metadata came from gives the
    /// changed metadata back: create, grow, reconfigure, delete, re-create.
    #[test]
    fn records_replay_the_change() {
        let mut image = ClusterImage::default();
        let mut index = 0;
        let mut step = |image: &mut ClusterImage, next: Metadata| {
            let current = metadata_from_image(Arc::new(image.clone()), "c");
            let records = records_for_change(&current, &next, image, 1);
            index += 1;
            image.apply_batch(index, &records).unwrap();
            let after = metadata_from_image(Arc::new(image.clone()), "c");
            assert_eq!(after.topics, next.topics);
        };
        let (a, b, a2) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        step(
            &mut image,
            meta_with(&[("a", a, 3, &[("retention.ms", "5")])]),
        );
        step(
            &mut image,
            meta_with(&[("a", a, 5, &[("segment.ms", "9")]), ("b", b, 1, &[])]),
        );
        step(&mut image, meta_with(&[("b", b, 1, &[])]));
        step(
            &mut image,
            meta_with(&[("a", a2, 2, &[]), ("b", b, 1, &[])]),
        );
    }
}
