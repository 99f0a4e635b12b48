//! The cluster metadata image: what the committed records add up to, and
//! the rules by which a record applies.
//!
//! Every node applies the same committed batches in the same order, so the
//! rules must be deterministic: they look at the image and the entry's
//! index only, never at a clock or at this node's id.
//!
//! Rules (a batch applies whole or not at all; a rejected batch leaves the
//! image as it was, and its proposer gets the reason):
//! 1. `ClusterId` applies only while the image has none.
//! 2. `RegisterBroker` replaces any registration of that broker id; its
//!    epoch is the entry's index, so it is larger than any earlier one.
//! 3. `FenceBroker`/`UnfenceBroker` need the broker registered with exactly
//!    that epoch (a stale heartbeat cannot touch a newer incarnation).
//! 4. `Topic` needs a new name and a new id.
//! 5. `Partition` needs its topic, the next partition index (partitions are
//!    dense, 0..n), at least one replica, no replica twice, an ISR within
//!    the replicas, and a leader in the ISR or -1.
//! 6. `PartitionChange` needs the partition; a changed leader bumps the
//!    leader epoch, any change bumps the partition epoch; the result obeys
//!    rule 5's replica, ISR and leader checks.
//! 7. `Config` on a topic needs the topic.
//! 8. `ProducerIds` must move `next_producer_id` forward.
//! 9. `RemoveTopic` needs the topic and takes its partitions and configs.
//! 10. `AlterPartition` needs the partition with the record's leader and
//!     leader epoch (else FENCED_LEADER_EPOCH) and partition epoch (else
//!     INVALID_UPDATE_VERSION), an ISR of replicas holding the leader, and
//!     every added member registered and unfenced (else
//!     INELIGIBLE_REPLICA); it sets the ISR and bumps the partition epoch.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use uuid::Uuid;

use crate::records::{ConfigResource, Record};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRegistration {
    pub broker_id: i32,
    pub incarnation_id: Uuid,
    pub epoch: i64,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
    pub fenced: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub leader: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicImage {
    pub name: String,
    pub id: Uuid,
    /// Partition `i` is at index `i` (rule 5 keeps them dense).
    pub partitions: Vec<PartitionState>,
    pub configs: BTreeMap<String, String>,
}

/// Everything the metadata log says, as of `applied_index`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterImage {
    /// The Raft index of the last applied entry (applied or rejected).
    pub applied_index: u64,
    pub cluster_id: Option<String>,
    pub topics: BTreeMap<String, TopicImage>,
    pub brokers: BTreeMap<i32, BrokerRegistration>,
    pub broker_configs: BTreeMap<String, BTreeMap<String, String>>,
    /// The first producer id no broker has been given.
    pub next_producer_id: i64,
    /// Topic names by id (an index over `topics`).
    pub topic_ids: BTreeMap<Uuid, String>,
    /// The Raft learners (`process.roles=broker` nodes) and the address
    /// each receives the metadata log on, from the conf changes that added
    /// them. Not a record: conf change entries set it.
    #[serde(default)]
    pub learners: BTreeMap<u64, String>,
    /// Not in the log: set on this node's own copy while it has heard no
    /// active controller for a broker session (`Driver::watch_contact`);
    /// its broker then leads nothing.
    #[serde(skip)]
    pub out_of_contact: bool,
}

/// What a batch changed, saved before its first change, so that a batch
/// rejected halfway is rolled back without copying the whole image (a
/// copy per batch made 10,000 topic creations take minutes).
#[derive(Default)]
struct Undo {
    cluster_id: Option<Option<String>>,
    next_producer_id: Option<i64>,
    topics: BTreeMap<String, Option<TopicImage>>,
    topic_ids: BTreeMap<Uuid, Option<String>>,
    brokers: BTreeMap<i32, Option<BrokerRegistration>>,
    broker_configs: BTreeMap<String, Option<BTreeMap<String, String>>>,
}

#[derive(Debug, Clone, Error, PartialEq, Eq, Serialize, Deserialize)]
pub enum ApplyError {
    #[error("the cluster id is already set")]
    ClusterIdSet,
    #[error("topic '{0}' already exists")]
    TopicExists(String),
    #[error("topic id {0} already exists")]
    TopicIdExists(Uuid),
    #[error("unknown topic id {0}")]
    UnknownTopicId(Uuid),
    #[error("unknown topic '{0}'")]
    UnknownTopic(String),
    #[error("partition {partition} of topic {topic_id}: {reason}")]
    BadPartition {
        topic_id: Uuid,
        partition: i32,
        reason: String,
    },
    #[error("broker {broker_id} is not registered with epoch {epoch}")]
    StaleBrokerEpoch { broker_id: i32, epoch: i64 },
    #[error("AlterPartition of partition {partition} of topic {topic_id} rejected: {reason}")]
    AlterPartition {
        topic_id: Uuid,
        partition: i32,
        reason: AlterPartitionError,
    },
    #[error("producer ids must move forward (next is {current}, record says {proposed})")]
    ProducerIdsBackwards { current: i64, proposed: i64 },
}

/// Why an AlterPartition was refused, as Kafka's error codes say it.
#[derive(Debug, Clone, Error, PartialEq, Eq, Serialize, Deserialize)]
pub enum AlterPartitionError {
    #[error("unknown topic or partition")]
    UnknownPartition,
    #[error("the leader or leader epoch is not the partition's")]
    FencedLeaderEpoch,
    #[error("the partition epoch is not the partition's")]
    InvalidUpdateVersion,
    #[error("broker {0} cannot join the ISR (not a replica, or not registered and unfenced)")]
    IneligibleReplica(i32),
    #[error("the ISR must hold the leader")]
    InvalidRequest,
    #[error("no active controller, or it stopped")]
    NotController,
    #[error("not applied in time")]
    TimedOut,
}

impl AlterPartitionError {
    /// Kafka's error code.
    pub fn code(&self) -> i16 {
        match self {
            AlterPartitionError::UnknownPartition => 3,
            AlterPartitionError::FencedLeaderEpoch => 74,
            AlterPartitionError::InvalidUpdateVersion => 96,
            AlterPartitionError::IneligibleReplica(_) => 107,
            AlterPartitionError::InvalidRequest => 42,
            AlterPartitionError::NotController => 41,
            AlterPartitionError::TimedOut => 7,
        }
    }
}

impl ClusterImage {
    pub fn topic_by_id(&self, id: Uuid) -> Option<&TopicImage> {
        self.topics.get(self.topic_ids.get(&id)?)
    }

    fn topic_by_id_mut(&mut self, id: Uuid) -> Option<&mut TopicImage> {
        self.topics.get_mut(self.topic_ids.get(&id)?)
    }

    /// Brokers that may lead partitions, in id order.
    pub fn unfenced_brokers(&self) -> impl Iterator<Item = &BrokerRegistration> {
        self.brokers.values().filter(|b| !b.fenced)
    }

    /// Applies the batch of entry `index`: all its records or none. The
    /// applied index moves to `index` either way.
    pub fn apply_batch(&mut self, index: u64, records: &[Record]) -> Result<(), ApplyError> {
        debug_assert!(index > self.applied_index, "entries apply in index order");
        let mut undo = Undo::default();
        let result = records.iter().try_for_each(|r| {
            self.save(r, &mut undo);
            self.apply(index, r)
        });
        if result.is_err() {
            self.roll_back(undo);
        }
        self.applied_index = index;
        result
    }

    /// Saves in `undo` what `record` may change, unless saved already.
    fn save(&self, record: &Record, undo: &mut Undo) {
        let save_topic = |name: &String, undo: &mut Undo| {
            if !undo.topics.contains_key(name) {
                undo.topics
                    .insert(name.clone(), self.topics.get(name).cloned());
            }
        };
        let save_topic_id = |id: &Uuid, undo: &mut Undo| {
            if !undo.topic_ids.contains_key(id) {
                undo.topic_ids.insert(*id, self.topic_ids.get(id).cloned());
            }
            if let Some(name) = self.topic_ids.get(id) {
                if !undo.topics.contains_key(name) {
                    undo.topics
                        .insert(name.clone(), self.topics.get(name).cloned());
                }
            }
        };
        match record {
            Record::ClusterId { .. } => {
                undo.cluster_id
                    .get_or_insert_with(|| self.cluster_id.clone());
            }
            Record::RegisterBroker { broker_id, .. }
            | Record::FenceBroker { broker_id, .. }
            | Record::UnfenceBroker { broker_id, .. } => {
                if !undo.brokers.contains_key(broker_id) {
                    undo.brokers
                        .insert(*broker_id, self.brokers.get(broker_id).cloned());
                }
            }
            Record::Topic { name, topic_id } => {
                save_topic(name, undo);
                save_topic_id(topic_id, undo);
            }
            Record::Partition { topic_id, .. }
            | Record::PartitionChange { topic_id, .. }
            | Record::AlterPartition { topic_id, .. }
            | Record::RemoveTopic { topic_id } => save_topic_id(topic_id, undo),
            Record::Config {
                resource: ConfigResource::Topic,
                resource_name,
                ..
            } => save_topic(resource_name, undo),
            Record::Config {
                resource: ConfigResource::Broker,
                resource_name,
                ..
            } => {
                if !undo.broker_configs.contains_key(resource_name) {
                    undo.broker_configs.insert(
                        resource_name.clone(),
                        self.broker_configs.get(resource_name).cloned(),
                    );
                }
            }
            Record::ProducerIds { .. } => {
                undo.next_producer_id.get_or_insert(self.next_producer_id);
            }
        }
    }

    fn roll_back(&mut self, undo: Undo) {
        fn restore<K: Ord, V>(map: &mut BTreeMap<K, V>, saved: BTreeMap<K, Option<V>>) {
            for (k, v) in saved {
                match v {
                    Some(v) => map.insert(k, v),
                    None => map.remove(&k),
                };
            }
        }
        if let Some(id) = undo.cluster_id {
            self.cluster_id = id;
        }
        if let Some(next) = undo.next_producer_id {
            self.next_producer_id = next;
        }
        restore(&mut self.topics, undo.topics);
        restore(&mut self.topic_ids, undo.topic_ids);
        restore(&mut self.brokers, undo.brokers);
        restore(&mut self.broker_configs, undo.broker_configs);
    }

    fn apply(&mut self, index: u64, record: &Record) -> Result<(), ApplyError> {
        match record {
            Record::ClusterId { cluster_id } => {
                if self.cluster_id.is_some() {
                    return Err(ApplyError::ClusterIdSet);
                }
                self.cluster_id = Some(cluster_id.clone());
            }
            Record::RegisterBroker {
                broker_id,
                incarnation_id,
                host,
                port,
                rack,
                fenced,
            } => {
                let registration = BrokerRegistration {
                    broker_id: *broker_id,
                    incarnation_id: *incarnation_id,
                    epoch: i64::try_from(index).unwrap_or(i64::MAX),
                    host: host.clone(),
                    port: *port,
                    rack: rack.clone(),
                    fenced: *fenced,
                };
                self.brokers.insert(*broker_id, registration);
            }
            Record::FenceBroker { broker_id, epoch } => {
                self.set_fenced(*broker_id, *epoch, true)?
            }
            Record::UnfenceBroker { broker_id, epoch } => {
                self.set_fenced(*broker_id, *epoch, false)?
            }
            Record::Topic { name, topic_id } => {
                if self.topics.contains_key(name) {
                    return Err(ApplyError::TopicExists(name.clone()));
                }
                if self.topic_by_id(*topic_id).is_some() {
                    return Err(ApplyError::TopicIdExists(*topic_id));
                }
                self.topic_ids.insert(*topic_id, name.clone());
                self.topics.insert(
                    name.clone(),
                    TopicImage {
                        name: name.clone(),
                        id: *topic_id,
                        partitions: Vec::new(),
                        configs: BTreeMap::new(),
                    },
                );
            }
            Record::Partition {
                topic_id,
                partition,
                replicas,
                isr,
                leader,
                leader_epoch,
                partition_epoch,
            } => {
                let topic = self
                    .topic_by_id_mut(*topic_id)
                    .ok_or(ApplyError::UnknownTopicId(*topic_id))?;
                let bad = bad_partition(*topic_id, *partition);
                if usize::try_from(*partition).ok() != Some(topic.partitions.len()) {
                    return Err(bad(&format!(
                        "the next partition of this topic is {}",
                        topic.partitions.len()
                    )));
                }
                if *leader_epoch < 0 || *partition_epoch < 0 {
                    return Err(bad("epochs cannot be negative"));
                }
                let state = PartitionState {
                    replicas: replicas.clone(),
                    isr: isr.clone(),
                    leader: *leader,
                    leader_epoch: *leader_epoch,
                    partition_epoch: *partition_epoch,
                };
                check_partition(&state).map_err(&bad)?;
                topic.partitions.push(state);
            }
            Record::PartitionChange {
                topic_id,
                partition,
                leader,
                isr,
                replicas,
            } => {
                let topic = self
                    .topic_by_id_mut(*topic_id)
                    .ok_or(ApplyError::UnknownTopicId(*topic_id))?;
                let bad = bad_partition(*topic_id, *partition);
                let state = usize::try_from(*partition)
                    .ok()
                    .and_then(|p| topic.partitions.get_mut(p))
                    .ok_or_else(|| bad("no such partition"))?;
                let mut next = state.clone();
                if let Some(r) = replicas {
                    next.replicas = r.clone();
                }
                if let Some(i) = isr {
                    next.isr = i.clone();
                }
                if let Some(l) = leader {
                    if *l != state.leader {
                        next.leader = *l;
                        next.leader_epoch = state.leader_epoch.saturating_add(1);
                    }
                }
                if next != *state {
                    next.partition_epoch = state.partition_epoch.saturating_add(1);
                }
                check_partition(&next).map_err(&bad)?;
                *state = next;
            }
            Record::AlterPartition {
                topic_id,
                partition,
                leader,
                leader_epoch,
                partition_epoch,
                isr,
            } => {
                let reject = |reason| ApplyError::AlterPartition {
                    topic_id: *topic_id,
                    partition: *partition,
                    reason,
                };
                let usable = |b: &i32| self.brokers.get(b).is_some_and(|r| !r.fenced);
                let state = self
                    .topic_by_id(*topic_id)
                    .and_then(|t| t.partitions.get(usize::try_from(*partition).ok()?))
                    .ok_or_else(|| reject(AlterPartitionError::UnknownPartition))?;
                if state.leader != *leader || state.leader_epoch != *leader_epoch {
                    return Err(reject(AlterPartitionError::FencedLeaderEpoch));
                }
                if state.partition_epoch != *partition_epoch {
                    return Err(reject(AlterPartitionError::InvalidUpdateVersion));
                }
                if !isr.contains(leader) {
                    return Err(reject(AlterPartitionError::InvalidRequest));
                }
                for b in isr {
                    let added = !state.isr.contains(b);
                    if !state.replicas.contains(b) || (added && !usable(b)) {
                        return Err(reject(AlterPartitionError::IneligibleReplica(*b)));
                    }
                }
                let mut next = state.clone();
                next.isr = isr.clone();
                next.partition_epoch = state.partition_epoch.saturating_add(1);
                check_partition(&next).map_err(bad_partition(*topic_id, *partition))?;
                if let Some(slot) = self
                    .topic_by_id_mut(*topic_id)
                    .and_then(|t| t.partitions.get_mut(usize::try_from(*partition).ok()?))
                {
                    *slot = next;
                }
            }
            Record::Config {
                resource,
                resource_name,
                name,
                value,
            } => {
                let configs = match resource {
                    ConfigResource::Topic => {
                        &mut self
                            .topics
                            .get_mut(resource_name)
                            .ok_or_else(|| ApplyError::UnknownTopic(resource_name.clone()))?
                            .configs
                    }
                    ConfigResource::Broker => self
                        .broker_configs
                        .entry(resource_name.clone())
                        .or_default(),
                };
                match value {
                    Some(v) => configs.insert(name.clone(), v.clone()),
                    None => configs.remove(name),
                };
            }
            Record::ProducerIds {
                next_producer_id, ..
            } => {
                if *next_producer_id <= self.next_producer_id {
                    return Err(ApplyError::ProducerIdsBackwards {
                        current: self.next_producer_id,
                        proposed: *next_producer_id,
                    });
                }
                self.next_producer_id = *next_producer_id;
            }
            Record::RemoveTopic { topic_id } => {
                let name = self
                    .topic_by_id(*topic_id)
                    .map(|t| t.name.clone())
                    .ok_or(ApplyError::UnknownTopicId(*topic_id))?;
                self.topics.remove(&name);
                self.topic_ids.remove(topic_id);
            }
        }
        Ok(())
    }

    fn set_fenced(&mut self, broker_id: i32, epoch: i64, fenced: bool) -> Result<(), ApplyError> {
        match self.brokers.get_mut(&broker_id) {
            Some(b) if b.epoch == epoch => {
                b.fenced = fenced;
                Ok(())
            }
            _ => Err(ApplyError::StaleBrokerEpoch { broker_id, epoch }),
        }
    }
}

/// The error of a record on partition `partition` of `topic_id`.
fn bad_partition(topic_id: Uuid, partition: i32) -> impl Fn(&str) -> ApplyError {
    move |reason| ApplyError::BadPartition {
        topic_id,
        partition,
        reason: reason.to_string(),
    }
}

/// Rule 5's checks on a partition's replicas, ISR and leader.
fn check_partition(p: &PartitionState) -> Result<(), &'static str> {
    if p.replicas.is_empty() {
        return Err("a partition needs at least one replica");
    }
    let mut sorted = p.replicas.clone();
    sorted.sort_unstable();
    sorted.dedup();
    if sorted.len() != p.replicas.len() {
        return Err("a replica is listed twice");
    }
    if p.isr.iter().any(|b| !p.replicas.contains(b)) {
        return Err("the ISR has a broker that is not a replica");
    }
    if p.leader != -1 && !p.isr.contains(&p.leader) {
        return Err("the leader is not in the ISR");
    }
    Ok(())
}

#[cfg(test)]
#[path = "image_tests.rs"]
mod tests;
