//! IncrementalAlterConfigs (v0-v1) and the legacy AlterConfigs (v0-v1,
//! which replaces a resource's whole set): topic configs, and dynamic broker
//! configs (the broker keys that set topic defaults, for this broker or as
//! the cluster-wide default), changed through `Shard::update_metadata` and
//! pushed to the partitions' logs by `Shard::apply_metadata`, so a change
//! applies without a restart. In a cluster `update_metadata` proposes the
//! change as Config records to the active controller, and every node
//! applies them when the entry reaches its metadata.
//!
//! Each resource is all or nothing: every operation is checked on a copy of
//! the topic's configs, and the copy replaces them only when all pass.

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::messages::alter_configs_request::AlterConfigsResource as LegacyResource;
use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse as LegacyResponse;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use crate::config::{
    dynamic_broker_topic_key, topic_config_defaults, validate_topic_config, BrokerConfig,
};
use crate::metadata::Metadata;
use crate::shard::Shard;

/// Kafka's ConfigResource types.
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
/// Kafka's AlterConfigOp types.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;
/// Topic configs whose value is a comma-separated list (APPEND, SUBTRACT).
const LIST_TOPIC_CONFIGS: &[&str] = &["cleanup.policy"];

/// (error code, message)
type AlterError = (i16, String);

fn invalid_config(msg: impl Into<String>) -> AlterError {
    (ResponseError::InvalidConfig.code(), msg.into())
}

fn invalid_request(msg: impl Into<String>) -> AlterError {
    (ResponseError::InvalidRequest.code(), msg.into())
}

/// The value a topic config has now: set on the topic, else the broker's
/// default for topics, else Kafka's default.
fn effective_value(
    config: &BrokerConfig,
    explicit: &BTreeMap<String, String>,
    key: &str,
) -> String {
    explicit
        .get(key)
        .or_else(|| config.topic_defaults.get(key))
        .cloned()
        .or_else(|| {
            topic_config_defaults()
                .find(|(k, _)| *k == key)
                .map(|(_, d)| d.to_string())
        })
        .unwrap_or_default()
}

/// Applies one resource's operations to a copy of `explicit` and returns it.
fn altered_topic_configs(
    config: &BrokerConfig,
    explicit: &BTreeMap<String, String>,
    resource: &AlterConfigsResource,
) -> Result<BTreeMap<String, String>, AlterError> {
    let mut next = explicit.clone();
    for op in &resource.configs {
        let key = op.name.as_str();
        let value = op.value.as_ref().map(|v| v.as_str());
        match op.config_operation {
            OP_SET => {
                let Some(value) = value else {
                    return Err(invalid_request(format!("SET of '{key}' without a value")));
                };
                let value =
                    validate_topic_config(key, value).map_err(|e| invalid_config(e.to_string()))?;
                next.insert(key.to_string(), value);
            }
            OP_DELETE => {
                // Deleting an unknown key is an error, as in Kafka.
                validate_topic_config(key, &effective_value(config, explicit, key))
                    .map_err(|e| invalid_config(e.to_string()))?;
                next.remove(key);
            }
            OP_APPEND | OP_SUBTRACT => {
                if !LIST_TOPIC_CONFIGS.contains(&key) {
                    return Err(invalid_config(format!(
                        "config '{key}' is not a list; APPEND and SUBTRACT apply to list configs only"
                    )));
                }
                let items: Vec<&str> = value
                    .unwrap_or("")
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .collect();
                let current = effective_value(config, &next, key);
                let mut list: Vec<String> = current
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect();
                if op.config_operation == OP_APPEND {
                    for item in items {
                        if !list.iter().any(|x| x == item) {
                            list.push(item.to_string());
                        }
                    }
                } else {
                    list.retain(|x| !items.contains(&x.as_str()));
                }
                let value = validate_topic_config(key, &list.join(","))
                    .map_err(|e| invalid_config(e.to_string()))?;
                next.insert(key.to_string(), value);
            }
            other => {
                return Err(invalid_request(format!(
                    "unknown config operation {other} for '{key}'"
                )))
            }
        }
    }
    Ok(next)
}

/// A key given twice in one resource is refused, as Kafka refuses it.
fn check_unique_keys(resource: &AlterConfigsResource) -> Result<(), AlterError> {
    let mut seen: Vec<&str> = Vec::new();
    for op in &resource.configs {
        let key = op.name.as_str();
        if seen.contains(&key) {
            return Err(invalid_request(format!("config '{key}' given twice")));
        }
        seen.push(key);
    }
    Ok(())
}

/// Alters one resource in `m` (or in nothing, with `validate_only`).
fn alter_resource(
    config: &BrokerConfig,
    m: &mut Metadata,
    resource: &AlterConfigsResource,
    validate_only: bool,
) -> Result<(), AlterError> {
    check_unique_keys(resource)?;
    match resource.resource_type {
        RESOURCE_TOPIC => {
            let name = resource.resource_name.as_str();
            let Some(topic) = m.topics.get_mut(name) else {
                return Err((
                    ResponseError::UnknownTopicOrPartition.code(),
                    format!("unknown topic '{name}'"),
                ));
            };
            let next = altered_topic_configs(config, &topic.configs, resource)?;
            if !validate_only {
                topic.configs = next;
            }
            Ok(())
        }
        RESOURCE_BROKER => {
            let name = resource.resource_name.as_str();
            if !name.is_empty() && name != config.node_id.to_string() {
                return Err(invalid_request(format!("unknown broker '{name}'")));
            }
            let current = m.broker_configs.get(name).cloned().unwrap_or_default();
            let next = altered_broker_configs(&current, resource)?;
            if !validate_only {
                if next.is_empty() {
                    m.broker_configs.remove(name);
                } else {
                    m.broker_configs.insert(name.to_string(), next);
                }
            }
            Ok(())
        }
        other => Err(invalid_request(format!(
            "resource type {other} cannot be altered here (topics and brokers only)"
        ))),
    }
}

/// Applies SET and DELETE to a copy of one broker resource's dynamic
/// configs. Only the broker keys that set a topic default can change at run
/// time; anything else needs the config file and a restart.
fn altered_broker_configs(
    current: &BTreeMap<String, String>,
    resource: &AlterConfigsResource,
) -> Result<BTreeMap<String, String>, AlterError> {
    let mut next = current.clone();
    for op in &resource.configs {
        let key = op.name.as_str();
        let Some(topic_key) = dynamic_broker_topic_key(key) else {
            return Err(invalid_config(format!(
                "broker config '{key}' cannot be changed at run time \
                 (only the log.* topic defaults can); set it in the config file"
            )));
        };
        match (op.config_operation, op.value.as_ref()) {
            (OP_SET, Some(value)) => {
                let value = validate_topic_config(topic_key, value.as_str())
                    .map_err(|e| invalid_config(format!("{key}: {e}")))?;
                next.insert(key.to_string(), value);
            }
            (OP_DELETE, _) => {
                next.remove(key);
            }
            (op, _) => {
                return Err(invalid_request(format!(
                    "operation {op} on broker config '{key}': only SET with a value and DELETE"
                )))
            }
        }
    }
    Ok(next)
}

/// Alters every resource in one metadata update: `as_ops` gives each one's
/// IncrementalAlterConfigs operations (it may read the metadata first).
/// Answers in request order.
async fn alter_resources<R, F>(
    shard: &Rc<Shard>,
    resources: Vec<R>,
    validate_only: bool,
    key: fn(&R) -> (i8, StrBytes),
    as_ops: F,
) -> Vec<AlterConfigsResourceResponse>
where
    R: Send + 'static,
    F: Fn(&Metadata, &R) -> AlterConfigsResource + Send + 'static,
{
    let keys: Vec<(i8, StrBytes)> = resources.iter().map(key).collect();
    let config = shard.config.clone();
    let results = shard
        .update_metadata(move |m| {
            resources
                .iter()
                .map(|r| {
                    let ops = as_ops(m, r);
                    alter_resource(&config, m, &ops, validate_only)
                })
                .collect::<Vec<_>>()
        })
        .await;
    let results = match results {
        Ok(r) => r,
        Err(e) => keys
            .iter()
            .map(|_| Err((ResponseError::UnknownServerError.code(), e.to_string())))
            .collect(),
    };
    keys.into_iter()
        .zip(results)
        .map(|((resource_type, resource_name), result)| {
            let base = AlterConfigsResourceResponse::default()
                .with_resource_type(resource_type)
                .with_resource_name(resource_name);
            match result {
                Ok(()) => base,
                Err((code, msg)) => base
                    .with_error_code(code)
                    .with_error_message(Some(StrBytes::from_string(msg))),
            }
        })
        .collect()
}

pub async fn incremental_alter_configs(
    shard: &Rc<Shard>,
    req: IncrementalAlterConfigsRequest,
    _version: i16,
) -> IncrementalAlterConfigsResponse {
    let responses = alter_resources(
        shard,
        req.resources,
        req.validate_only,
        |r| (r.resource_type, r.resource_name.clone()),
        |_, r| r.clone(),
    )
    .await;
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

/// The legacy AlterConfigs resource as IncrementalAlterConfigs operations:
/// SET for every config given, DELETE for every one set now and not given,
/// so the given set replaces the whole set, as Kafka's AlterConfigs does.
fn as_replacement(m: &Metadata, legacy: &LegacyResource) -> AlterConfigsResource {
    let name = legacy.resource_name.as_str();
    let current: Vec<String> = match legacy.resource_type {
        RESOURCE_TOPIC => m
            .topics
            .get(name)
            .map(|t| t.configs.keys().cloned().collect())
            .unwrap_or_default(),
        RESOURCE_BROKER => m
            .broker_configs
            .get(name)
            .map(|c| c.keys().cloned().collect())
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    let given = legacy.configs.iter().map(|c| {
        AlterableConfig::default()
            .with_name(c.name.clone())
            .with_config_operation(OP_SET)
            .with_value(c.value.clone())
    });
    let dropped = current
        .into_iter()
        .filter(|k| !legacy.configs.iter().any(|c| c.name.as_str() == k))
        .map(|k| {
            AlterableConfig::default()
                .with_name(StrBytes::from_string(k))
                .with_config_operation(OP_DELETE)
        });
    AlterConfigsResource::default()
        .with_resource_type(legacy.resource_type)
        .with_resource_name(legacy.resource_name.clone())
        .with_configs(given.chain(dropped).collect())
}

/// AlterConfigs (v0-v1, the legacy, non-incremental API): each resource's
/// configs are replaced by the given set; checked and applied as
/// IncrementalAlterConfigs applies them.
pub async fn alter_configs(
    shard: &Rc<Shard>,
    req: AlterConfigsRequest,
    _version: i16,
) -> AlterConfigsResponse {
    let responses = alter_resources(
        shard,
        req.resources,
        req.validate_only,
        |r| (r.resource_type, r.resource_name.clone()),
        as_replacement,
    )
    .await
    .into_iter()
    .map(|r| {
        LegacyResponse::default()
            .with_resource_type(r.resource_type)
            .with_resource_name(r.resource_name)
            .with_error_code(r.error_code)
            .with_error_message(r.error_message)
    })
    .collect();
    AlterConfigsResponse::default().with_responses(responses)
}
