//! A single node's data dir upgraded in place into a cluster.
//!
//! A plain `strom serve` keeps its topics in `metadata.json`; a cluster
//! keeps them in the controller's log. When a node starts in a cluster with
//! topics in its local metadata, it moves them into the cluster metadata
//! before it serves anything, so that no client can auto-create one of
//! those names meanwhile and no image without them reaches the shards for
//! long:
//! 1. each local topic with its id, partition count and configs, every
//!    partition's only replica on this node;
//! 2. `__consumer_offsets`, every partition led by this node (its
//!    committed offsets are in this node's logs), unless the cluster has it
//!    already with every partition here (a cluster that has it elsewhere
//!    is refused: those offsets would be lost);
//! 3. the dynamic broker configs (`broker_configs`, set with
//!    IncrementalAlterConfigs on the single node);
//! 4. the local metadata file is rewritten without topics (the old one is
//!    kept beside it as `strom-metadata.single-node.json`), so later starts do
//!    not move them again.
//!
//! Each topic is one batch, applied whole or not at all. A batch the
//! cluster rejects because the name or id exists is fine when the cluster
//! holds the very same topic (a start that stopped before step 4);
//! any other collision stops the node with an error naming the topics, and
//! nothing is changed on disk.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use strom_controller::{ApplyError, ConfigResource, Controller, ProposeError, Record};
use uuid::Uuid;

use crate::cluster::{broker_config_records, config_records};
use crate::config::BrokerConfig;
use crate::group::OFFSETS_TOPIC;
use crate::metadata::Metadata;

/// How long a start waits for the quorum to take the single node's topics
/// before it gives up (the other voters may be starting too).
const UPGRADE_DEADLINE: Duration = Duration::from_secs(120);
/// How long between tries while no active controller is known.
const RETRY_INTERVAL: Duration = Duration::from_millis(200);
/// Where the single node's metadata file is kept after the move.
const SINGLE_NODE_METADATA_FILE: &str = "strom-metadata.single-node.json";

/// Moves `local`'s topics into the cluster metadata (see the module doc).
/// Nothing to do when `local` has no topics.
pub fn move_single_node_topics(
    config: &BrokerConfig,
    local: &Metadata,
    controller: &Arc<Controller>,
) -> anyhow::Result<()> {
    if local.topics.is_empty() {
        return Ok(());
    }
    let node_id = config.node_id;
    tracing::info!(
        topics = local.topics.len(),
        "moving the single node's topics into the cluster metadata"
    );
    let deadline = Instant::now()
        .checked_add(UPGRADE_DEADLINE)
        .unwrap_or_else(Instant::now);
    let mut collisions = Vec::new();
    for (name, t) in &local.topics {
        let mut records = vec![Record::Topic {
            name: name.clone(),
            topic_id: t.id,
        }];
        records
            .extend((0..t.partitions).map(|p| Record::single_replica_partition(t.id, p, node_id)));
        records.extend(config_records(
            ConfigResource::Topic,
            name,
            &BTreeMap::new(),
            &t.configs,
        ));
        match propose_until(controller, records, deadline)? {
            Ok(()) => {}
            Err(_) if same_topic_in_cluster(controller, name, t.id, t.partitions) => {}
            Err(e) => collisions.push(format!("{name} ({e})")),
        }
    }
    if !collisions.is_empty() {
        bail!(
            "data dir {} holds topics that collide with different ones in the cluster metadata: {}; \
             nothing was moved for them",
            config.data_dir.display(),
            collisions.join(", ")
        );
    }
    let offsets_partitions = config.groups.offsets_topic_num_partitions;
    let offsets = offsets_topic_records(offsets_partitions, node_id);
    match propose_until(controller, offsets, deadline)? {
        Ok(()) => {}
        Err(_) if offsets_all_here(controller, offsets_partitions, node_id) => {}
        Err(e) => bail!(
            "the cluster already has {OFFSETS_TOPIC} with partitions on other brokers ({e}); \
             this node's committed offsets would be lost: start the upgraded node before the cluster serves groups"
        ),
    }
    // The dynamic broker configs go along; the cluster's own, where it has
    // some already, are overwritten key by key.
    let broker_configs = broker_config_records(&BTreeMap::new(), &local.broker_configs);
    if !broker_configs.is_empty() {
        if let Err(e) = propose_until(controller, broker_configs, deadline)? {
            bail!("moving the dynamic broker configs into the cluster: {e}");
        }
    }
    let old = config.data_dir.join(crate::metadata::METADATA_FILE);
    std::fs::copy(&old, config.data_dir.join(SINGLE_NODE_METADATA_FILE))
        .with_context(|| format!("keeping a copy of {}", old.display()))?;
    Metadata {
        topics: BTreeMap::new(),
        ..local.clone()
    }
    .persist(&config.data_dir)
    .context("rewriting the local metadata after moving its topics")?;
    tracing::info!("the single node's topics are in the cluster metadata");
    Ok(())
}

/// `__consumer_offsets` with every partition on `node_id`, compacted.
fn offsets_topic_records(partitions: i32, node_id: i32) -> Vec<Record> {
    let topic_id = Uuid::new_v4();
    let mut records = vec![Record::Topic {
        name: OFFSETS_TOPIC.to_string(),
        topic_id,
    }];
    records.extend((0..partitions).map(|p| Record::single_replica_partition(topic_id, p, node_id)));
    records.push(Record::Config {
        resource: ConfigResource::Topic,
        resource_name: OFFSETS_TOPIC.to_string(),
        name: "cleanup.policy".to_string(),
        value: Some("compact".to_string()),
    });
    records
}

fn offsets_all_here(controller: &Controller, partitions: i32, node_id: i32) -> bool {
    let image = controller.image();
    image.topics.get(OFFSETS_TOPIC).is_some_and(|t| {
        usize::try_from(partitions) == Ok(t.partitions.len())
            && t.partitions.iter().all(|p| p.replicas == [node_id])
    })
}

fn same_topic_in_cluster(controller: &Controller, name: &str, id: Uuid, partitions: i32) -> bool {
    let image = controller.image();
    image
        .topics
        .get(name)
        .is_some_and(|t| t.id == id && usize::try_from(partitions) == Ok(t.partitions.len()))
}

/// Proposes `records` until the cluster applies or rejects them; retries
/// while no controller is known or a proposal times out. The outer error
/// stops the start (deadline, controller gone); the inner one is the
/// cluster's rejection.
fn propose_until(
    controller: &Controller,
    records: Vec<Record>,
    deadline: Instant,
) -> anyhow::Result<Result<(), ApplyError>> {
    loop {
        let answer = futures_lite::future::block_on(controller.propose(records.clone()))
            .map_err(|_| anyhow!("the controller stopped"))?;
        match answer {
            Ok(_) => return Ok(Ok(())),
            Err(ProposeError::Rejected(e)) => return Ok(Err(e)),
            Err(ProposeError::Stopped) => bail!("the controller stopped"),
            Err(e @ (ProposeError::NoLeader | ProposeError::TimedOut(_))) => {
                if Instant::now() >= deadline {
                    bail!(
                        "moving the single node's topics into the cluster: {e} within {} s; \
                         are the other voters up? (nothing was changed)",
                        UPGRADE_DEADLINE.as_secs()
                    );
                }
                std::thread::sleep(RETRY_INTERVAL);
            }
        }
    }
}
