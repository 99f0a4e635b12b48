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
use std::sync::{Arc, OnceLock};

use anyhow::{anyhow, bail, Context};
use strom_controller::{
    BrokerInfo, ClusterImage, ConfigResource, Controller, ControllerConfig, PartitionState, Record,
};

use crate::config::BrokerConfig;
use crate::metadata::{Metadata, TopicMeta};

/// The controller's directory in the data dir. Partition directories are
/// `<topic>-<number>`, so no partition can have this name.
pub const CONTROLLER_DIR: &str = "strom-controller";

static CONTROLLER: OnceLock<Arc<Controller>> = OnceLock::new();

/// The running controller, in a cluster.
pub fn controller() -> Option<&'static Arc<Controller>> {
    CONTROLLER.get()
}

/// Every image the controller applies, in order.
pub type ImageReceiver = futures_channel::mpsc::UnboundedReceiver<Arc<ClusterImage>>;

/// Starts the controller when voters are configured; `None` on a single node.
pub fn start(config: &BrokerConfig, local: &Metadata) -> anyhow::Result<Option<ImageReceiver>> {
    if !config.cluster.enabled() {
        return Ok(None);
    }
    let dir = config.data_dir.join(CONTROLLER_DIR);
    if !local.topics.is_empty() && !dir.exists() {
        // The image would not know them, and applying it would close their
        // logs: refuse rather than lose track of data.
        bail!(
            "data dir {} holds the topics of a single node ({}); moving them into a cluster is not supported yet",
            config.data_dir.display(),
            local.topics.len()
        );
    }
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
    let topics = image
        .topics
        .iter()
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
        // Dynamic broker configs are not records yet: a cluster has none
        // (IncrementalAlterConfigs refuses them there).
        broker_configs: Default::default(),
        cluster: Some(image),
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
        for p in first_new.max(0)..t.partitions {
            let leader = place(name, p, &brokers);
            records.push(Record::single_replica_partition(t.id, p, leader));
        }
        records.extend(config_records(name, old_configs, &t.configs));
    }
    records
}

fn config_records(
    topic: &str,
    old: &BTreeMap<String, String>,
    new: &BTreeMap<String, String>,
) -> Vec<Record> {
    let set = |name: &String, value: Option<&String>| Record::Config {
        resource: ConfigResource::Topic,
        resource_name: topic.to_string(),
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

/// Partition `p`'s leader: round robin over `brokers`, starting at a place
/// given by the topic's name so that one-partition topics spread too.
fn place(topic: &str, p: i32, brokers: &[i32]) -> i32 {
    let start = crc32c::crc32c(topic.as_bytes()) as usize;
    let p = usize::try_from(p).unwrap_or(0);
    let i = start
        .wrapping_add(p)
        .checked_rem(brokers.len())
        .unwrap_or(0);
    brokers.get(i).copied().unwrap_or(-1)
}

/// The partition's state in a cluster's metadata, `None` on one node.
pub fn partition_state<'m>(meta: &'m Metadata, topic: &str, p: i32) -> Option<&'m PartitionState> {
    let image = meta.cluster.as_ref()?;
    let topic = image.topics.get(topic)?;
    topic.partitions.get(usize::try_from(p).ok()?)
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

    #[test]
    fn partitions_spread_over_brokers() {
        let brokers = [1, 2, 3];
        let leaders: std::collections::BTreeSet<i32> =
            (0..12).map(|p| place("t", p, &brokers)).collect();
        assert_eq!(leaders.len(), 3);
        assert_eq!(place("t", 0, &[]), -1);
    }
}
