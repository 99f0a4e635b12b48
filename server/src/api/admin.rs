//! Topic administration: CreateTopics (v2-v7), DeleteTopics (v1-v6),
//! CreatePartitions (v0-v3), DescribeConfigs (v1-v4). Every change goes
//! through `Shard::update_metadata` (serialized on shard 0, persisted,
//! published to every shard before the response).

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteTopicsRequest, DeleteTopicsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use uuid::Uuid;

use crate::config::{
    dynamic_broker_topic_key, dynamic_topic_defaults, topic_config_defaults, validate_topic_config,
    BrokerConfig,
};
use crate::metadata::{validate_topic_name, Metadata, TopicMeta, PARTITIONS_PER_TOPIC_MAX};
use crate::placement::plan;
pub use crate::placement::Replication;
use crate::shard::Shard;

/// A topic to create, already taken apart from the request.
#[derive(Debug, Clone)]
pub struct NewTopic {
    pub name: String,
    pub partitions: i32,
    pub configs: BTreeMap<String, String>,
    /// Its replicas: a factor (the default resolved) or a manual assignment.
    pub replication: Replication,
}

/// (error code, message)
pub type AdminError = (i16, String);

fn err(e: ResponseError, msg: impl Into<String>) -> AdminError {
    (e.code(), msg.into())
}

/// Adds a topic to `m`, checking name, partition count, uniqueness and
/// its replication against the brokers `m` knows (in a cluster, the
/// replicas go to `m.new_replicas`; on one node only this node, `node_id`,
/// can hold them).
pub fn create_topic_in(
    m: &mut Metadata,
    node_id: i32,
    topic: NewTopic,
) -> Result<Uuid, AdminError> {
    validate_topic_name(&topic.name)
        .map_err(|msg| err(ResponseError::InvalidTopicException, msg))?;
    if m.topics.contains_key(&topic.name) {
        return Err(err(
            ResponseError::TopicAlreadyExists,
            format!("topic '{}' already exists", topic.name),
        ));
    }
    if topic.partitions < 1 || topic.partitions > PARTITIONS_PER_TOPIC_MAX {
        return Err(err(
            ResponseError::InvalidPartitions,
            format!("number of partitions must be in [1, {PARTITIONS_PER_TOPIC_MAX}]"),
        ));
    }
    let replicas = plan(
        m,
        node_id,
        &topic.name,
        0,
        topic.partitions,
        &topic.replication,
    )?;
    if m.cluster.is_some() {
        m.new_replicas.insert(topic.name.clone(), replicas);
    }
    let id = Uuid::new_v4();
    m.topics.insert(
        topic.name,
        TopicMeta {
            id,
            partitions: topic.partitions,
            configs: topic.configs,
        },
    );
    Ok(id)
}

/// Turns one requested topic into a `NewTopic`, or the error to answer.
fn new_topic(
    config: &BrokerConfig,
    t: &kafka_protocol::messages::create_topics_request::CreatableTopic,
) -> Result<NewTopic, AdminError> {
    let name = t.name.0.as_str().to_string();
    let (partitions, replication) = if !t.assignments.is_empty() {
        if t.num_partitions != -1 || t.replication_factor != -1 {
            return Err(err(
                ResponseError::InvalidRequest,
                "assignments given with num_partitions or replication_factor",
            ));
        }
        let mut by_index: Vec<_> = t.assignments.iter().collect();
        by_index.sort_by_key(|a| a.partition_index);
        if by_index
            .iter()
            .enumerate()
            .any(|(i, a)| usize::try_from(a.partition_index).ok() != Some(i))
        {
            return Err(err(
                ResponseError::InvalidReplicaAssignment,
                "partitions should be a consecutive 0-based integer sequence",
            ));
        }
        let replicas = by_index
            .iter()
            .map(|a| a.broker_ids.iter().map(|b| b.0).collect())
            .collect();
        let count = i32::try_from(t.assignments.len()).unwrap_or(i32::MAX);
        (count, Replication::Manual(replicas))
    } else {
        let partitions = if t.num_partitions == -1 {
            config.num_partitions
        } else {
            t.num_partitions
        };
        (
            partitions,
            default_replication(config, &name, t.replication_factor),
        )
    };
    let mut configs = BTreeMap::new();
    for c in &t.configs {
        let key = c.name.as_str();
        let Some(value) = &c.value else { continue };
        let value = validate_topic_config(key, value.as_str())
            .map_err(|e| err(ResponseError::InvalidConfig, e.to_string()))?;
        configs.insert(key.to_string(), value);
    }
    Ok(NewTopic {
        name,
        partitions,
        configs,
        replication,
    })
}

/// The Confluent schema registry's topic, created with
/// `kafkastore.topic.replication.factor` (3) replicas.
const SCHEMAS_TOPIC: &str = "_schemas";
/// Its replication factor: at most 3, fewer on a smaller cluster (the
/// registry asks for the broker default, -1).
const SCHEMAS_TOPIC_REPLICATION_MAX: i32 = 3;

/// The replication a topic asks for: `requested`, or with -1 the broker's
/// `default.replication.factor` (`_schemas`: up to 3).
pub fn default_replication(config: &BrokerConfig, topic: &str, requested: i16) -> Replication {
    match requested {
        -1 if topic == SCHEMAS_TOPIC => Replication::AtMost(SCHEMAS_TOPIC_REPLICATION_MAX),
        -1 => Replication::Factor(config.default_replication_factor),
        rf => Replication::Factor(i32::from(rf)),
    }
}

pub async fn create_topics(
    shard: &Rc<Shard>,
    req: CreateTopicsRequest,
    version: i16,
) -> CreateTopicsResponse {
    let validate_only = req.validate_only;
    let node_id = shard.config.node_id;
    let prepared: Vec<(String, Result<NewTopic, AdminError>)> = req
        .topics
        .iter()
        .map(|t| (t.name.0.as_str().to_string(), new_topic(&shard.config, t)))
        .collect();
    let requested = prepared.clone();
    let results = shard
        .update_metadata(move |m| {
            requested
                .into_iter()
                .map(|(_, t)| {
                    let t = t?;
                    if validate_only {
                        let mut scratch = m.clone();
                        return create_topic_in(&mut scratch, node_id, t);
                    }
                    create_topic_in(m, node_id, t)
                })
                .collect::<Vec<_>>()
        })
        .await;
    let results = match results {
        Ok(r) => r,
        Err(e) => prepared
            .iter()
            .map(|_| Err(err(ResponseError::UnknownServerError, e.to_string())))
            .collect(),
    };
    let meta = shard.metadata();
    let topics = prepared
        .into_iter()
        .zip(results)
        .map(|((name, prep), result)| {
            let base = CreatableTopicResult::default()
                .with_name(TopicName(StrBytes::from_string(name.clone())));
            match result {
                Ok(id) => {
                    let (partitions, configs, requested_rf) = match &prep {
                        Ok(t) => (t.partitions, t.configs.clone(), factor_of(&t.replication)),
                        Err(_) => (-1, BTreeMap::new(), -1),
                    };
                    // What the controller placed, else what was asked.
                    let rf = crate::cluster::partition_state(&meta, &name, 0)
                        .filter(|_| !validate_only)
                        .map_or(requested_rf, |s| {
                            i16::try_from(s.replicas.len()).unwrap_or(i16::MAX)
                        });
                    let described = if version >= 5 {
                        let dynamic =
                            dynamic_topic_defaults(&meta.broker_configs, shard.config.node_id);
                        Some(created_configs(&shard.config, &dynamic, &configs))
                    } else {
                        None
                    };
                    let id = if validate_only {
                        Uuid::nil()
                    } else {
                        meta.topics.get(&name).map_or(id, |t| t.id)
                    };
                    base.with_topic_id(id)
                        .with_num_partitions(partitions)
                        .with_replication_factor(rf)
                        .with_configs(described)
                }
                Err((code, msg)) => base
                    .with_error_code(code)
                    .with_error_message(Some(StrBytes::from_string(msg)))
                    .with_num_partitions(-1)
                    .with_replication_factor(-1),
            }
        })
        .collect();
    CreateTopicsResponse::default().with_topics(topics)
}

/// The replication factor a request asked for (-1: up to the brokers).
fn factor_of(r: &Replication) -> i16 {
    match r {
        Replication::Factor(f) => i16::try_from(*f).unwrap_or(-1),
        Replication::AtMost(_) => -1,
        Replication::Manual(a) => a
            .first()
            .map_or(-1, |r| i16::try_from(r.len()).unwrap_or(-1)),
    }
}

fn created_configs(
    config: &BrokerConfig,
    dynamic: &BTreeMap<String, (String, i8)>,
    explicit: &BTreeMap<String, String>,
) -> Vec<CreatableTopicConfigs> {
    describe_topic_configs(config, dynamic, explicit, None)
        .into_iter()
        .map(|c| {
            CreatableTopicConfigs::default()
                .with_name(c.name)
                .with_value(c.value)
                .with_read_only(false)
                .with_config_source(c.config_source)
                .with_is_sensitive(false)
        })
        .collect()
}

pub async fn delete_topics(
    shard: &Rc<Shard>,
    req: DeleteTopicsRequest,
    _version: i16,
) -> DeleteTopicsResponse {
    // v0-v5 name topics in `topic_names`; v6 uses `topics` (name or id).
    let mut targets: Vec<(Option<String>, Uuid)> = req
        .topic_names
        .iter()
        .map(|n| (Some(n.0.as_str().to_string()), Uuid::nil()))
        .collect();
    targets.extend(req.topics.iter().map(|t| {
        (
            t.name.as_ref().map(|n| n.0.as_str().to_string()),
            t.topic_id,
        )
    }));
    let requested = targets.clone();
    let results = shard
        .update_metadata(move |m| {
            requested
                .into_iter()
                .map(|(name, id)| {
                    let name = match name {
                        Some(n) => n,
                        None => match m.topic_by_id(id) {
                            Some((n, _)) => n.clone(),
                            None => {
                                return Err(err(ResponseError::UnknownTopicId, "unknown topic id"))
                            }
                        },
                    };
                    match m.topics.remove(&name) {
                        Some(t) => Ok((name, t.id)),
                        None => Err(err(
                            ResponseError::UnknownTopicOrPartition,
                            format!("unknown topic '{name}'"),
                        )),
                    }
                })
                .collect::<Vec<_>>()
        })
        .await;
    let results = match results {
        Ok(r) => r,
        Err(e) => targets
            .iter()
            .map(|_| Err(err(ResponseError::UnknownServerError, e.to_string())))
            .collect(),
    };
    let responses = targets
        .into_iter()
        .zip(results)
        .map(|((name, id), result)| match result {
            Ok((name, id)) => DeletableTopicResult::default()
                .with_name(Some(TopicName(StrBytes::from_string(name))))
                .with_topic_id(id),
            Err((code, msg)) => DeletableTopicResult::default()
                .with_name(name.map(|n| TopicName(StrBytes::from_string(n))))
                .with_topic_id(id)
                .with_error_code(code)
                .with_error_message(Some(StrBytes::from_string(msg))),
        })
        .collect();
    DeleteTopicsResponse::default().with_responses(responses)
}

pub async fn create_partitions(
    shard: &Rc<Shard>,
    req: CreatePartitionsRequest,
    _version: i16,
) -> CreatePartitionsResponse {
    let validate_only = req.validate_only;
    let node_id = shard.config.node_id;
    type Requested = (String, i32, Option<Vec<Vec<i32>>>);
    let requested: Vec<Requested> = req
        .topics
        .iter()
        .map(|t| {
            // An empty list is no assignment, as a null one: clients built
            // on kafka-protocol's defaults send it (Kafka would refuse it).
            let manual = t.assignments.as_ref().filter(|a| !a.is_empty()).map(|a| {
                a.iter()
                    .map(|a| a.broker_ids.iter().map(|b| b.0).collect())
                    .collect()
            });
            (t.name.0.as_str().to_string(), t.count, manual)
        })
        .collect();
    let for_update = requested.clone();
    let results = shard
        .update_metadata(move |m| {
            for_update
                .into_iter()
                .map(|(name, count, manual)| {
                    let Some(t) = m.topics.get(&name) else {
                        return Err(err(
                            ResponseError::UnknownTopicOrPartition,
                            format!("unknown topic '{name}'"),
                        ));
                    };
                    if count <= t.partitions {
                        return Err(err(
                            ResponseError::InvalidPartitions,
                            format!(
                                "topic has {} partitions; the new count must be larger",
                                t.partitions
                            ),
                        ));
                    }
                    if count > PARTITIONS_PER_TOPIC_MAX {
                        return Err(err(
                            ResponseError::InvalidPartitions,
                            format!("at most {PARTITIONS_PER_TOPIC_MAX} partitions"),
                        ));
                    }
                    let first = t.partitions;
                    let added = count.saturating_sub(first);
                    let replication = new_partitions_replication(m, &name, count, manual)?;
                    let replicas = plan(m, node_id, &name, first, added, &replication)?;
                    if !validate_only {
                        if m.cluster.is_some() {
                            m.new_replicas.insert(name.clone(), replicas);
                        }
                        if let Some(t) = m.topics.get_mut(&name) {
                            t.partitions = count;
                        }
                    }
                    Ok(())
                })
                .collect::<Vec<_>>()
        })
        .await;
    let results = match results {
        Ok(r) => r,
        Err(e) => requested
            .iter()
            .map(|_| Err(err(ResponseError::UnknownServerError, e.to_string())))
            .collect(),
    };
    let results = requested
        .into_iter()
        .zip(results)
        .map(|((name, _, _), r)| {
            let base = CreatePartitionsTopicResult::default()
                .with_name(TopicName(StrBytes::from_string(name)));
            match r {
                Ok(()) => base,
                Err((code, msg)) => base
                    .with_error_code(code)
                    .with_error_message(Some(StrBytes::from_string(msg))),
            }
        })
        .collect();
    CreatePartitionsResponse::default().with_results(results)
}

/// The replication of partitions added to `topic` to reach `count`: as
/// many replicas as its partition 0 has (one on a single node), or the
/// request's assignment, which must give each new partition that many.
fn new_partitions_replication(
    m: &Metadata,
    topic: &str,
    count: i32,
    manual: Option<Vec<Vec<i32>>>,
) -> Result<Replication, AdminError> {
    let existing = m.topics.get(topic).map_or(0, |t| t.partitions);
    let rf = crate::cluster::partition_state(m, topic, 0).map_or(1, |s| s.replicas.len());
    let Some(manual) = manual else {
        return Ok(Replication::Factor(i32::try_from(rf).unwrap_or(i32::MAX)));
    };
    let added = usize::try_from(count.saturating_sub(existing)).unwrap_or(0);
    if manual.len() != added {
        return Err(err(
            ResponseError::InvalidReplicaAssignment,
            format!(
                "Attempted to add {added} additional partition(s), but only {} assignment(s) were given.",
                manual.len()
            ),
        ));
    }
    if let Some(bad) = manual.iter().find(|r| r.len() != rf) {
        return Err(err(
            ResponseError::InvalidReplicaAssignment,
            format!(
                "The manual partition assignment includes a partition with {} replica(s), but \
                 this is not consistent with previous partitions, which have {rf} replica(s).",
                bad.len()
            ),
        ));
    }
    Ok(Replication::Manual(manual))
}

/// Kafka's ConfigResource types.
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
/// Kafka's ConfigSource values.
const SOURCE_DYNAMIC_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;

/// A topic default's value and source: dynamic broker config, else the
/// config file, else Kafka's default.
fn topic_default(
    config: &BrokerConfig,
    dynamic: &BTreeMap<String, (String, i8)>,
    name: &str,
    default: &str,
) -> (String, i8) {
    match (dynamic.get(name), config.topic_defaults.get(name)) {
        (Some((v, source)), _) => (v.clone(), *source),
        (None, Some(v)) => (v.clone(), SOURCE_STATIC_BROKER),
        (None, None) => (default.to_string(), SOURCE_DEFAULT),
    }
}

fn describe_topic_configs(
    config: &BrokerConfig,
    dynamic: &BTreeMap<String, (String, i8)>,
    explicit: &BTreeMap<String, String>,
    keys: Option<&[StrBytes]>,
) -> Vec<DescribeConfigsResourceResult> {
    topic_config_defaults()
        .filter(|(name, _)| keys.is_none_or(|k| k.iter().any(|k| k.as_str() == *name)))
        .map(|(name, default)| {
            let (value, source) = match explicit.get(name) {
                Some(v) => (v.clone(), SOURCE_DYNAMIC_TOPIC),
                None => topic_default(config, dynamic, name, default),
            };
            DescribeConfigsResourceResult::default()
                .with_name(StrBytes::from_static_str(name))
                .with_value(Some(StrBytes::from_string(value)))
                .with_config_source(source)
        })
        .collect()
}

fn describe_broker_configs(
    config: &BrokerConfig,
    dynamic: &BTreeMap<String, (String, i8)>,
    keys: Option<&[StrBytes]>,
) -> Vec<DescribeConfigsResourceResult> {
    let fixed: Vec<(String, String)> = vec![
        ("num.partitions".into(), config.num_partitions.to_string()),
        (
            "auto.create.topics.enable".into(),
            config.auto_create_topics.to_string(),
        ),
        (
            "socket.request.max.bytes".into(),
            config.socket_request_max_bytes.to_string(),
        ),
        ("fetch.max.bytes".into(), config.fetch_max_bytes.to_string()),
        (
            "queued.max.request.bytes".into(),
            config
                .queued_max_request_bytes
                .map_or(-1, |n| n as i64)
                .to_string(),
        ),
        (
            "connections.max.idle.ms".into(),
            config.connections_max_idle_ms.to_string(),
        ),
        ("max.connections".into(), config.max_connections.to_string()),
        (
            "max.connections.per.ip".into(),
            config.max_connections_per_ip().to_string(),
        ),
        ("node.id".into(), config.node_id.to_string()),
        ("broker.id".into(), config.node_id.to_string()),
        ("log.dirs".into(), config.data_dir.display().to_string()),
        (
            "default.replication.factor".into(),
            config.default_replication_factor.to_string(),
        ),
        (
            "offsets.topic.replication.factor".into(),
            config.offsets_topic_replication_factor.to_string(),
        ),
    ];
    let mut entries: Vec<(String, String, i8)> = fixed
        .into_iter()
        .map(|(k, v)| (k, v, SOURCE_STATIC_BROKER))
        .collect();
    for (topic_key, default) in topic_config_defaults() {
        let (value, source) = topic_default(config, dynamic, topic_key, default);
        let broker_key = match topic_key {
            // Topic-only configs: Confluent's brokers have no default for them.
            k if k.starts_with("confluent.") => continue,
            "max.message.bytes" => "message.max.bytes".to_string(),
            "segment.ms" => "log.roll.ms".to_string(),
            "flush.ms" => "log.flush.interval.ms".to_string(),
            "flush.messages" => "log.flush.interval.messages".to_string(),
            "compression.type" | "min.insync.replicas" | "unclean.leader.election.enable" => {
                topic_key.to_string()
            }
            k => format!("log.{k}"),
        };
        entries.push((broker_key, value, source));
    }
    entries
        .into_iter()
        .filter(|(name, _, _)| keys.is_none_or(|k| k.iter().any(|k| k.as_str() == name)))
        .map(|(name, value, source)| {
            let read_only = dynamic_broker_topic_key(&name).is_none();
            DescribeConfigsResourceResult::default()
                .with_name(StrBytes::from_string(name))
                .with_value(Some(StrBytes::from_string(value)))
                .with_read_only(read_only)
                .with_config_source(source)
        })
        .collect()
}

pub async fn describe_configs(
    shard: &Rc<Shard>,
    req: DescribeConfigsRequest,
    _version: i16,
) -> DescribeConfigsResponse {
    let meta = shard.metadata();
    let results = req
        .resources
        .into_iter()
        .map(|r| {
            // Null or empty: every config.
            let keys = r.configuration_keys.as_deref().filter(|k| !k.is_empty());
            let base = DescribeConfigsResult::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone());
            match r.resource_type {
                RESOURCE_TOPIC => match meta.topics.get(r.resource_name.as_str()) {
                    Some(t) => base.with_configs(describe_topic_configs(
                        &shard.config,
                        &dynamic_topic_defaults(&meta.broker_configs, shard.config.node_id),
                        &t.configs,
                        keys,
                    )),
                    None => base
                        .with_error_code(ResponseError::UnknownTopicOrPartition.code())
                        .with_error_message(Some(StrBytes::from_string(format!(
                            "unknown topic '{}'",
                            r.resource_name.as_str()
                        )))),
                },
                RESOURCE_BROKER => {
                    let name = r.resource_name.as_str();
                    if name.is_empty() || name == shard.config.node_id.to_string() {
                        // The default resource ("") shows the cluster-wide
                        // dynamic defaults only, a broker all its layers.
                        let mut layers = meta.broker_configs.clone();
                        if name.is_empty() {
                            layers.retain(|k, _| k.is_empty());
                        }
                        let dynamic = dynamic_topic_defaults(&layers, shard.config.node_id);
                        base.with_configs(describe_broker_configs(&shard.config, &dynamic, keys))
                    } else {
                        base.with_error_code(ResponseError::InvalidRequest.code())
                            .with_error_message(Some(StrBytes::from_string(format!(
                                "unknown broker '{name}'"
                            ))))
                    }
                }
                _ => base
                    .with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(Some(StrBytes::from_static_str(
                        "unsupported resource type",
                    ))),
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}
