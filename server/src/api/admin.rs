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
use crate::shard::Shard;

/// A topic to create, already taken apart from the request.
#[derive(Debug, Clone)]
pub struct NewTopic {
    pub name: String,
    pub partitions: i32,
    pub configs: BTreeMap<String, String>,
}

/// (error code, message)
pub type AdminError = (i16, String);

fn err(e: ResponseError, msg: impl Into<String>) -> AdminError {
    (e.code(), msg.into())
}

/// Adds a topic to `m`, checking name, partition count and uniqueness.
pub fn create_topic_in(m: &mut Metadata, topic: NewTopic) -> Result<Uuid, AdminError> {
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
    if t.replication_factor > 1 {
        return Err(err(
            ResponseError::InvalidReplicationFactor,
            format!(
                "replication factor {} is larger than the 1 available broker",
                t.replication_factor
            ),
        ));
    }
    if t.replication_factor == 0 || t.replication_factor < -1 {
        return Err(err(
            ResponseError::InvalidReplicationFactor,
            "replication factor must be -1 or 1",
        ));
    }
    let partitions = if !t.assignments.is_empty() {
        if t.num_partitions != -1 || t.replication_factor != -1 {
            return Err(err(
                ResponseError::InvalidRequest,
                "assignments given with num_partitions or replication_factor",
            ));
        }
        t.assignments.len() as i32
    } else if t.num_partitions == -1 {
        config.num_partitions
    } else {
        t.num_partitions
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
    })
}

pub async fn create_topics(
    shard: &Rc<Shard>,
    req: CreateTopicsRequest,
    version: i16,
) -> CreateTopicsResponse {
    let validate_only = req.validate_only;
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
                        return create_topic_in(&mut scratch, t);
                    }
                    create_topic_in(m, t)
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
                    let (partitions, configs) = match &prep {
                        Ok(t) => (t.partitions, t.configs.clone()),
                        Err(_) => (-1, BTreeMap::new()),
                    };
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
                        .with_replication_factor(1)
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
    let requested: Vec<(String, i32)> = req
        .topics
        .iter()
        .map(|t| (t.name.0.as_str().to_string(), t.count))
        .collect();
    let for_update = requested.clone();
    let results = shard
        .update_metadata(move |m| {
            for_update
                .into_iter()
                .map(|(name, count)| {
                    let Some(t) = m.topics.get_mut(&name) else {
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
                    if !validate_only {
                        t.partitions = count;
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
        .map(|((name, _), r)| {
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
        ("default.replication.factor".into(), "1".into()),
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
            "compression.type" | "min.insync.replicas" => topic_key.to_string(),
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
