//! Metadata (v0-v12): on one node, this broker as the only node, leader of
//! everything; in a cluster, every unfenced broker and each partition's
//! leader, replicas, ISR and leader epoch from the controller's image.
//! Auto-creates requested topics when both the request and the broker allow.
//! DescribeCluster (v0-v2): the unfenced brokers, the cluster id and the
//! active controller (this node alone on a single node).

use std::rc::Rc;

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, DescribeClusterRequest, DescribeClusterResponse, MetadataRequest, MetadataResponse,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use uuid::Uuid;

use super::admin::{create_topic_in, default_replication, NewTopic};
use crate::metadata::{validate_topic_name, Metadata, TopicMeta};
use crate::shard::Shard;

pub async fn handle(shard: &Rc<Shard>, req: MetadataRequest, version: i16) -> MetadataResponse {
    let node_id = shard.config.node_id;
    let (host, port) = shard.config.advertised();
    let mut meta = shard.metadata();

    // v0: an empty list means all topics; v1+: null means all, empty means none.
    let requested: Option<Vec<(Option<String>, Uuid)>> = match req.topics {
        None => None,
        Some(list) if list.is_empty() && version == 0 => None,
        Some(list) => Some(
            list.into_iter()
                .map(|t| (t.name.map(|n| n.0.as_str().to_string()), t.topic_id))
                .collect(),
        ),
    };

    // Auto-create what is missing (v4+ lets the client opt out).
    let allow_auto_create =
        shard.config.auto_create_topics && (version < 4 || req.allow_auto_topic_creation);
    if let (true, Some(list)) = (allow_auto_create, &requested) {
        let missing: Vec<String> = list
            .iter()
            .filter_map(|(name, _)| name.clone())
            .filter(|n| !meta.topics.contains_key(n) && validate_topic_name(n).is_ok())
            .collect();
        if !missing.is_empty() {
            let partitions = shard.config.num_partitions;
            let config = shard.config.clone();
            let created = shard
                .update_metadata(move |m| {
                    for name in missing {
                        let replication = default_replication(&config, &name, -1);
                        let topic = NewTopic {
                            name,
                            partitions,
                            configs: Default::default(),
                            replication,
                        };
                        // A concurrent request may have created it first; that is fine.
                        if let Err((code, msg)) = create_topic_in(m, config.node_id, topic) {
                            tracing::debug!(code, "auto-create skipped: {msg}");
                        }
                    }
                })
                .await;
            if let Err(e) = created {
                tracing::warn!("auto-create failed: {e}");
            }
            meta = shard.metadata();
        }
    }

    let topics = match requested {
        None => meta
            .topics
            .iter()
            .map(|(name, t)| topic_entry(&meta, name, Some(t), node_id))
            .collect(),
        Some(list) => list
            .into_iter()
            .map(|(name, id)| match name {
                Some(name) => {
                    let internal = internal_topic(&meta, &name);
                    if let (Err(msg), None) = (validate_topic_name(&name), &internal) {
                        tracing::debug!("metadata for invalid topic: {msg}");
                        return error_entry(Some(name), id, ResponseError::InvalidTopicException);
                    }
                    let topic = meta.topics.get(&name).or(internal.as_ref());
                    topic_entry(&meta, &name, topic, node_id)
                }
                None => match lookup_by_id(&meta, id) {
                    Some((name, t)) => topic_entry(&meta, name, Some(t), node_id),
                    None => error_entry(None, id, ResponseError::UnknownTopicId),
                },
            })
            .collect(),
    };

    // Without an authorizer every operation is allowed. The sentinel
    // i32::MIN ("not requested") must not be sent when the client asked:
    // kafka-python decodes every set bit as an ACL operation.
    let mut topics: Vec<MetadataResponseTopic> = topics;
    if version >= 8 && req.include_topic_authorized_operations {
        for t in &mut topics {
            t.topic_authorized_operations = TOPIC_OPERATIONS_ALL;
        }
    }
    let cluster_ops = if (8..=10).contains(&version) && req.include_cluster_authorized_operations {
        CLUSTER_OPERATIONS_ALL
    } else {
        i32::MIN
    };

    let brokers = crate::cluster::brokers(&meta).unwrap_or_else(|| vec![(node_id, host, port)]);
    let controller_id = crate::cluster::controller_id().unwrap_or(node_id);
    MetadataResponse::default()
        .with_cluster_authorized_operations(cluster_ops)
        .with_brokers(
            brokers
                .into_iter()
                .map(|(id, host, port)| {
                    MetadataResponseBroker::default()
                        .with_node_id(BrokerId(id))
                        .with_host(StrBytes::from_string(host))
                        .with_port(port)
                })
                .collect(),
        )
        .with_cluster_id(Some(StrBytes::from_string(meta.cluster_id.clone())))
        .with_controller_id(BrokerId(controller_id))
        .with_topics(topics)
}

/// DescribeCluster: on one node, this broker as the only node and the
/// controller; in a cluster, every unfenced broker and the active
/// controller (-1 while none is known). `endpoint_type` 2 (controllers,
/// KIP-919) is answered with the same nodes: every node is broker and
/// controller both.
pub fn describe_cluster(
    shard: &Rc<Shard>,
    req: &DescribeClusterRequest,
) -> DescribeClusterResponse {
    let node_id = shard.config.node_id;
    let (host, port) = shard.config.advertised();
    let cluster_ops = if req.include_cluster_authorized_operations {
        CLUSTER_OPERATIONS_ALL
    } else {
        i32::MIN
    };
    let meta = shard.metadata();
    let brokers = crate::cluster::brokers(&meta).unwrap_or_else(|| vec![(node_id, host, port)]);
    let controller_id = crate::cluster::controller_id().unwrap_or(node_id);
    DescribeClusterResponse::default()
        .with_endpoint_type(req.endpoint_type)
        .with_cluster_id(StrBytes::from_string(meta.cluster_id.clone()))
        .with_controller_id(BrokerId(controller_id))
        .with_brokers(
            brokers
                .into_iter()
                .map(|(id, host, port)| {
                    DescribeClusterBroker::default()
                        .with_broker_id(BrokerId(id))
                        .with_host(StrBytes::from_string(host))
                        .with_port(port)
                })
                .collect(),
        )
        .with_cluster_authorized_operations(cluster_ops)
}

/// Bit set of the ACL operations on a topic (Kafka's AclOperation codes):
/// READ 3, WRITE 4, CREATE 5, DELETE 6, ALTER 7, DESCRIBE 8,
/// DESCRIBE_CONFIGS 10, ALTER_CONFIGS 11.
const TOPIC_OPERATIONS_ALL: i32 =
    (1 << 3) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 8) | (1 << 10) | (1 << 11);
/// Cluster operations: CREATE 5, ALTER 7, DESCRIBE 8, CLUSTER_ACTION 9,
/// DESCRIBE_CONFIGS 10, ALTER_CONFIGS 11, IDEMPOTENT_WRITE 12.
const CLUSTER_OPERATIONS_ALL: i32 =
    (1 << 5) | (1 << 7) | (1 << 8) | (1 << 9) | (1 << 10) | (1 << 11) | (1 << 12);

/// In a cluster, an internal topic asked for by name (`__consumer_offsets`)
/// is described from the image, as Kafka does; the shards' metadata leaves
/// it out because the coordinators own its logs.
fn internal_topic(meta: &Metadata, name: &str) -> Option<TopicMeta> {
    if !crate::metadata::INTERNAL_TOPICS.contains(&name) {
        return None;
    }
    let t = meta.cluster.as_ref()?.topics.get(name)?;
    Some(TopicMeta {
        id: t.id,
        partitions: i32::try_from(t.partitions.len()).unwrap_or(i32::MAX),
        configs: t.configs.clone(),
    })
}

fn lookup_by_id(meta: &Metadata, id: Uuid) -> Option<(&String, &TopicMeta)> {
    if id.is_nil() {
        return None;
    }
    meta.topic_by_id(id)
}

fn error_entry(name: Option<String>, id: Uuid, error: ResponseError) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_error_code(error.code())
        .with_name(name.map(|n| TopicName(StrBytes::from_string(n))))
        .with_topic_id(id)
}

fn topic_entry(
    meta: &Metadata,
    name: &str,
    topic: Option<&TopicMeta>,
    node_id: i32,
) -> MetadataResponseTopic {
    let Some(topic) = topic else {
        return error_entry(
            Some(name.to_string()),
            Uuid::nil(),
            ResponseError::UnknownTopicOrPartition,
        );
    };
    let partitions = (0..topic.partitions)
        .map(|p| {
            let ids = |v: &[i32]| v.iter().map(|&b| BrokerId(b)).collect::<Vec<_>>();
            let base = MetadataResponsePartition::default().with_partition_index(p);
            match crate::cluster::partition_state(meta, name, p) {
                // Kafka's answer for a partition without a leader.
                Some(state) => base
                    .with_error_code(if state.leader == -1 {
                        ResponseError::LeaderNotAvailable.code()
                    } else {
                        0
                    })
                    .with_leader_id(BrokerId(state.leader))
                    .with_leader_epoch(state.leader_epoch)
                    .with_replica_nodes(ids(&state.replicas))
                    .with_isr_nodes(ids(&state.isr))
                    .with_offline_replicas(ids(&crate::cluster::offline_replicas(meta, state))),
                None => base
                    .with_leader_id(BrokerId(node_id))
                    .with_leader_epoch(0)
                    .with_replica_nodes(vec![BrokerId(node_id)])
                    .with_isr_nodes(vec![BrokerId(node_id)]),
            }
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(name.to_string()))))
        .with_topic_id(topic.id)
        .with_is_internal(crate::metadata::INTERNAL_TOPICS.contains(&name))
        .with_partitions(partitions)
}
