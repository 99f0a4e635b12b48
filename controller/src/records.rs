//! The metadata log's records, modelled on KRaft's (`metadata/src/main/
//! resources/common/metadata/*Record.json` in Apache Kafka).
//!
//! A Raft entry carries one [`Batch`]: records that apply all together or
//! not at all (KRaft's atomic batches). A batch is encoded as JSON: metadata
//! is small and rare next to the data path, and a readable log is worth more
//! here than a few bytes.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A config resource, as Kafka's `ConfigResource.Type` (TOPIC 2, BROKER 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ConfigResource {
    Topic,
    Broker,
}

/// One metadata record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    /// The cluster's id, set once by the first active controller (KRaft
    /// keeps it in `meta.properties`, written by `kafka-storage format`; a
    /// Strom cluster formats itself).
    ClusterId { cluster_id: String },
    /// `RegisterBrokerRecord`. The broker epoch is not in the record: it is
    /// the Raft index of the entry that registers the broker, as KRaft uses
    /// the offset of the registration record, so it grows with every
    /// registration on every node alike.
    RegisterBroker {
        broker_id: i32,
        incarnation_id: Uuid,
        host: String,
        port: i32,
        rack: Option<String>,
        /// Kafka registers brokers fenced; they are unfenced once caught up.
        fenced: bool,
    },
    /// `FenceBrokerRecord`: the broker serves no partition.
    FenceBroker { broker_id: i32, epoch: i64 },
    /// `UnfenceBrokerRecord`.
    UnfenceBroker { broker_id: i32, epoch: i64 },
    /// `TopicRecord`.
    Topic { name: String, topic_id: Uuid },
    /// `PartitionRecord`: a new partition of an existing topic.
    Partition {
        topic_id: Uuid,
        partition: i32,
        replicas: Vec<i32>,
        isr: Vec<i32>,
        /// -1: no leader.
        leader: i32,
        leader_epoch: i32,
        partition_epoch: i32,
    },
    /// `PartitionChangeRecord`: what is `None` is unchanged. A new leader
    /// bumps the leader epoch; any change bumps the partition epoch.
    PartitionChange {
        topic_id: Uuid,
        partition: i32,
        leader: Option<i32>,
        isr: Option<Vec<i32>>,
        replicas: Option<Vec<i32>>,
    },
    /// KRaft's AlterPartition as a record: the partition leader's ISR
    /// change. It applies only if the partition's leader, leader epoch and
    /// partition epoch are still these, and every new ISR member is a
    /// replica (an added one also a registered, unfenced broker); it sets
    /// the ISR and bumps the partition epoch (image rule 10).
    AlterPartition {
        topic_id: Uuid,
        partition: i32,
        leader: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        isr: Vec<i32>,
    },
    /// `ConfigRecord`: `value: None` deletes the config.
    Config {
        resource: ConfigResource,
        resource_name: String,
        name: String,
        value: Option<String>,
    },
    /// `ProducerIdsRecord`: the ids below `next_producer_id` are taken;
    /// `broker_id` was given the block that ends there.
    ProducerIds {
        broker_id: i32,
        broker_epoch: i64,
        next_producer_id: i64,
    },
    /// `RemoveTopicRecord`: the topic, its partitions and its configs go.
    RemoveTopic { topic_id: Uuid },
}

impl Record {
    /// A new partition with one replica, `leader`, which leads it at epoch 0
    /// (what every partition is until replication comes).
    pub fn single_replica_partition(topic_id: Uuid, partition: i32, leader: i32) -> Record {
        Record::Partition {
            topic_id,
            partition,
            replicas: vec![leader],
            isr: vec![leader],
            leader,
            leader_epoch: 0,
            partition_epoch: 0,
        }
    }
}

/// Who proposed a batch and which request it answers, so the proposing
/// node can tell its caller the outcome when the entry is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    pub node_id: u64,
    pub request_id: u64,
}

/// The payload of one Raft entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    pub origin: Option<Origin>,
    pub records: Vec<Record>,
}

impl Batch {
    pub fn encode(&self) -> Vec<u8> {
        // Serializing plain data with string keys cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Batch, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}
