//! Broker configuration and topic configs.
//!
//! Keys are Kafka's (`num.partitions`, `log.retention.ms`, ...). Broker keys
//! that set a topic default (`log.segment.bytes` → `segment.bytes`) are kept
//! as topic-config defaults, so a topic's effective `LogConfig` is: engine
//! defaults, then broker-level defaults, then the topic's own configs.

use std::collections::BTreeMap;
use std::path::PathBuf;

use strom_engine::LogConfig;
use thiserror::Error;

/// Kafka's default `socket.request.max.bytes` (100 MiB).
pub const DEFAULT_SOCKET_REQUEST_MAX_BYTES: usize = 100 * 1024 * 1024;

/// Kafka's default `fetch.max.bytes` (55 MiB): the most a Fetch response
/// carries, whatever the request's `max_bytes`.
pub const DEFAULT_FETCH_MAX_BYTES: usize = 55 * 1024 * 1024;

/// Strom's default `queued.max.request.bytes`, per shard (Kafka's is -1,
/// unbounded, for the whole broker): bytes of request frames being read or
/// processed. As large as the largest frame Kafka accepts by default, so a
/// default-sized frame never waits for an empty shard.
pub const DEFAULT_QUEUED_MAX_REQUEST_BYTES: usize = 100 * 1024 * 1024;

/// Kafka's default `connections.max.idle.ms` (10 minutes).
pub const DEFAULT_CONNECTIONS_MAX_IDLE_MS: u64 = 600_000;

/// Strom's default `max.connections` for the whole broker (Kafka's is
/// unbounded): each connection costs a file descriptor and its buffers.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ConfigError {
    #[error("unknown config key `{0}`")]
    UnknownKey(String),
    #[error("invalid value `{value}` for config `{key}`: {reason}")]
    BadValue {
        key: String,
        value: String,
        reason: String,
    },
}

fn bad(key: &str, value: &str, reason: &str) -> ConfigError {
    ConfigError::BadValue {
        key: key.to_string(),
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

/// How a topic config is validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Integer in `[min, i64::MAX]`.
    Long(i64),
    /// Integer in `[min, i32::MAX]`.
    Int(i64),
    Bool,
    Ratio,
    OneOf(&'static [&'static str]),
    CleanupPolicy,
}

/// Every topic config Strom accepts, with its default as Strom applies it.
/// Configs without an engine effect yet are stored and described, so clients
/// that set them keep working.
const TOPIC_CONFIGS: &[(&str, Kind, &str)] = &[
    ("cleanup.policy", Kind::CleanupPolicy, "delete"),
    (
        "compression.type",
        Kind::OneOf(&["producer", "uncompressed", "gzip", "snappy", "lz4", "zstd"]),
        "producer",
    ),
    // Produce-side validation against the schema registry (Confluent's
    // names): a record's key or value must carry an id registered under
    // the topic's subject (`<topic>-key`, `<topic>-value`).
    ("confluent.key.schema.validation", Kind::Bool, "false"),
    ("confluent.value.schema.validation", Kind::Bool, "false"),
    ("delete.retention.ms", Kind::Long(0), "86400000"),
    ("file.delete.delay.ms", Kind::Long(0), "60000"),
    ("flush.messages", Kind::Long(1), "9223372036854775807"),
    ("flush.ms", Kind::Long(0), "1000"),
    ("index.interval.bytes", Kind::Int(0), "4096"),
    (
        "max.compaction.lag.ms",
        Kind::Long(1),
        "9223372036854775807",
    ),
    ("max.message.bytes", Kind::Int(0), "1048588"),
    ("message.timestamp.after.max.ms", Kind::Long(0), "3600000"),
    (
        "message.timestamp.before.max.ms",
        Kind::Long(0),
        "9223372036854775807",
    ),
    (
        "message.timestamp.difference.max.ms",
        Kind::Long(0),
        "9223372036854775807",
    ),
    (
        "message.timestamp.type",
        Kind::OneOf(&["CreateTime", "LogAppendTime"]),
        "CreateTime",
    ),
    ("min.cleanable.dirty.ratio", Kind::Ratio, "0.5"),
    ("min.compaction.lag.ms", Kind::Long(0), "0"),
    ("min.insync.replicas", Kind::Int(1), "1"),
    ("preallocate", Kind::Bool, "true"),
    ("retention.bytes", Kind::Long(-1), "-1"),
    ("retention.ms", Kind::Long(-1), "604800000"),
    ("segment.bytes", Kind::Int(14), "1073741824"),
    ("segment.index.bytes", Kind::Int(4), "10485760"),
    ("segment.jitter.ms", Kind::Long(0), "0"),
    ("segment.ms", Kind::Long(1), "604800000"),
    ("unclean.leader.election.enable", Kind::Bool, "false"),
];

/// All topic config names with their defaults, in name order.
pub fn topic_config_defaults() -> impl Iterator<Item = (&'static str, &'static str)> {
    TOPIC_CONFIGS.iter().map(|(k, _, d)| (*k, *d))
}

/// Checks a topic config and returns its normalized value.
pub fn validate_topic_config(key: &str, value: &str) -> Result<String, ConfigError> {
    let Some((_, kind, _)) = TOPIC_CONFIGS.iter().find(|(k, _, _)| *k == key) else {
        return Err(ConfigError::UnknownKey(key.to_string()));
    };
    let v = value.trim();
    match *kind {
        Kind::Long(min) | Kind::Int(min) => {
            let n: i64 = v.parse().map_err(|_| bad(key, value, "not an integer"))?;
            let max = if matches!(kind, Kind::Int(_)) {
                i32::MAX as i64
            } else {
                i64::MAX
            };
            if n < min || n > max {
                return Err(bad(key, value, &format!("must be in [{min}, {max}]")));
            }
            Ok(n.to_string())
        }
        Kind::Bool => match v.to_ascii_lowercase().as_str() {
            "true" => Ok("true".into()),
            "false" => Ok("false".into()),
            _ => Err(bad(key, value, "must be true or false")),
        },
        Kind::Ratio => {
            let r: f64 = v.parse().map_err(|_| bad(key, value, "not a number"))?;
            if !(0.0..=1.0).contains(&r) {
                return Err(bad(key, value, "must be in [0, 1]"));
            }
            Ok(v.to_string())
        }
        Kind::OneOf(options) => options
            .iter()
            .find(|o| o.eq_ignore_ascii_case(v))
            .map(|o| o.to_string())
            .ok_or_else(|| {
                bad(
                    key,
                    value,
                    &format!("must be one of {}", options.join(", ")),
                )
            }),
        Kind::CleanupPolicy => {
            let mut parts: Vec<&str> = v.split(',').map(str::trim).collect();
            parts.sort_unstable();
            parts.dedup();
            match parts.as_slice() {
                ["delete"] | ["compact"] | ["compact", "delete"] => Ok(parts.join(",")),
                _ => Err(bad(key, value, "must be delete, compact or compact,delete")),
            }
        }
    }
}

/// Applies one validated topic config to the engine's `LogConfig`. Configs
/// the engine has no field for leave it unchanged.
fn apply_to_log_config(cfg: &mut LogConfig, key: &str, value: &str) {
    let num = || value.parse::<i64>().unwrap_or(0);
    match key {
        "segment.bytes" => cfg.segment_bytes = num().max(0) as u64,
        "segment.ms" => cfg.segment_ms = num(),
        "index.interval.bytes" => cfg.index_interval_bytes = num().clamp(0, u32::MAX as i64) as u32,
        "flush.messages" => {
            cfg.flush_messages = if num() == i64::MAX {
                u64::MAX
            } else {
                num().max(1) as u64
            };
        }
        "flush.ms" => cfg.flush_ms = num(),
        "retention.ms" => cfg.retention_ms = num(),
        "retention.bytes" => cfg.retention_bytes = num(),
        "cleanup.policy" => {
            cfg.cleanup_delete = value.split(',').any(|p| p.trim() == "delete");
            cfg.cleanup_compact = value.split(',').any(|p| p.trim() == "compact");
        }
        "min.cleanable.dirty.ratio" => {
            cfg.min_cleanable_dirty_ratio = value.parse::<f64>().unwrap_or(0.5).clamp(0.0, 1.0)
        }
        "min.compaction.lag.ms" => cfg.min_compaction_lag_ms = num(),
        "max.compaction.lag.ms" => cfg.max_compaction_lag_ms = num(),
        "delete.retention.ms" => cfg.delete_retention_ms = num(),
        "max.message.bytes" => cfg.max_message_bytes = num().max(0) as usize,
        "message.timestamp.type" => cfg.log_append_time = value == "LogAppendTime",
        "message.timestamp.before.max.ms" => cfg.timestamp_before_max_ms = num(),
        "message.timestamp.after.max.ms" => cfg.timestamp_after_max_ms = num(),
        "preallocate" => cfg.preallocate = value == "true",
        "min.insync.replicas" => cfg.min_insync_replicas = num().clamp(1, i32::MAX.into()) as i32,
        _ => {}
    }
}

/// The broker's configuration.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub data_dir: PathBuf,
    pub listen: String,
    /// `host:port` given to clients in Metadata; defaults to `listen`.
    pub advertised_listener: Option<String>,
    /// Number of shards (cores); `None`: all available cores.
    pub shards: Option<usize>,
    /// `node.id` / `broker.id`.
    pub node_id: i32,
    /// `num.partitions`.
    pub num_partitions: i32,
    /// `auto.create.topics.enable`.
    pub auto_create_topics: bool,
    /// `socket.request.max.bytes`.
    pub socket_request_max_bytes: usize,
    /// `fetch.max.bytes`: clamps every Fetch request's `max_bytes`.
    pub fetch_max_bytes: usize,
    /// `queued.max.request.bytes`, per shard; `None` (-1): unbounded.
    pub queued_max_request_bytes: Option<usize>,
    /// `connections.max.idle.ms`.
    pub connections_max_idle_ms: u64,
    /// `max.connections`, for the whole broker.
    pub max_connections: usize,
    /// `max.connections.per.ip`, for the whole broker; defaults to
    /// `max.connections` (no separate limit, as in Kafka).
    pub max_connections_per_ip: Option<usize>,
    /// Where each shard writes its request stage latencies once a second
    /// (`--stage-latency`; no Kafka key): see `crate::stages`.
    pub stage_latency_dir: Option<PathBuf>,
    /// Broker-level defaults of topic configs (topic config names).
    pub topic_defaults: BTreeMap<String, String>,
    /// Consumer-group settings (`group.*`, `offsets.*`).
    pub groups: crate::group::GroupConfig,
    /// The log cleaner (`log.cleaner.*`).
    pub cleaner: strom_engine::config::CleanerConfig,
    /// `schema.registry.listeners`: `host:port` of the built-in schema
    /// registry (strom-registry); `None`: no registry.
    pub schema_registry_listen: Option<String>,
    /// The registry's ids per subject, for topics that validate produced
    /// records (`confluent.value.schema.validation`); empty without one.
    pub schema_ids: strom_registry::SchemaIds,
    /// The cluster keys (`process.roles`, `controller.quorum.voters`, ...).
    pub cluster: crate::cluster_config::ClusterConfig,
    /// `default.replication.factor` (Kafka's default 1): topics created
    /// with replication factor -1, and auto-created ones.
    pub default_replication_factor: i32,
    /// `offsets.topic.replication.factor` (Kafka's default 3), capped at
    /// the unfenced brokers when `__consumer_offsets` is created.
    pub offsets_topic_replication_factor: i32,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            data_dir: PathBuf::from("data"),
            listen: "0.0.0.0:9092".into(),
            advertised_listener: None,
            shards: None,
            node_id: 0,
            num_partitions: 1,
            auto_create_topics: true,
            socket_request_max_bytes: DEFAULT_SOCKET_REQUEST_MAX_BYTES,
            fetch_max_bytes: DEFAULT_FETCH_MAX_BYTES,
            queued_max_request_bytes: Some(DEFAULT_QUEUED_MAX_REQUEST_BYTES),
            connections_max_idle_ms: DEFAULT_CONNECTIONS_MAX_IDLE_MS,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_ip: None,
            stage_latency_dir: None,
            topic_defaults: BTreeMap::new(),
            groups: crate::group::GroupConfig::default(),
            cleaner: strom_engine::config::CleanerConfig::default(),
            schema_registry_listen: None,
            schema_ids: Default::default(),
            cluster: crate::cluster_config::ClusterConfig::default(),
            default_replication_factor: 1,
            offsets_topic_replication_factor: 3,
        }
    }
}

/// Broker keys that set a topic-config default.
const BROKER_TOPIC_KEYS: &[(&str, &str)] = &[
    ("log.segment.bytes", "segment.bytes"),
    ("log.roll.ms", "segment.ms"),
    ("log.retention.ms", "retention.ms"),
    ("log.retention.bytes", "retention.bytes"),
    ("message.max.bytes", "max.message.bytes"),
    ("log.flush.interval.ms", "flush.ms"),
    ("log.flush.interval.messages", "flush.messages"),
    ("log.index.interval.bytes", "index.interval.bytes"),
    ("log.message.timestamp.type", "message.timestamp.type"),
    (
        "log.message.timestamp.before.max.ms",
        "message.timestamp.before.max.ms",
    ),
    (
        "log.message.timestamp.after.max.ms",
        "message.timestamp.after.max.ms",
    ),
    ("log.cleanup.policy", "cleanup.policy"),
    ("log.preallocate", "preallocate"),
    ("log.cleaner.delete.retention.ms", "delete.retention.ms"),
    (
        "log.cleaner.min.cleanable.ratio",
        "min.cleanable.dirty.ratio",
    ),
    ("log.cleaner.min.compaction.lag.ms", "min.compaction.lag.ms"),
    ("log.cleaner.max.compaction.lag.ms", "max.compaction.lag.ms"),
    ("compression.type", "compression.type"),
    ("min.insync.replicas", "min.insync.replicas"),
    (
        "unclean.leader.election.enable",
        "unclean.leader.election.enable",
    ),
];

/// The topic config a broker key sets the default of, for the broker keys
/// that can be changed at run time (IncrementalAlterConfigs on a broker).
pub fn dynamic_broker_topic_key(broker_key: &str) -> Option<&'static str> {
    BROKER_TOPIC_KEYS
        .iter()
        .find(|(b, _)| *b == broker_key)
        .map(|(_, t)| *t)
}

/// The topic defaults that dynamic broker configs set, with the source each
/// comes from (Kafka's ConfigSource: 2 for this broker, 3 for the
/// cluster-wide default); this broker's own value wins.
pub fn dynamic_topic_defaults(
    broker_configs: &BTreeMap<String, BTreeMap<String, String>>,
    node_id: i32,
) -> BTreeMap<String, (String, i8)> {
    let mut out = BTreeMap::new();
    let layers = [
        (broker_configs.get(""), SOURCE_DYNAMIC_DEFAULT_BROKER),
        (
            broker_configs.get(&node_id.to_string()),
            SOURCE_DYNAMIC_BROKER,
        ),
    ];
    for (layer, source) in layers {
        for (k, v) in layer.into_iter().flatten() {
            if let Some(topic_key) = dynamic_broker_topic_key(k) {
                out.insert(topic_key.to_string(), (v.clone(), source));
            }
        }
    }
    out
}

/// Kafka's ConfigSource values for dynamic broker configs.
pub const SOURCE_DYNAMIC_BROKER: i8 = 2;
pub const SOURCE_DYNAMIC_DEFAULT_BROKER: i8 = 3;

/// Broker keys accepted for compatibility that have no effect on a single node.
const IGNORED_BROKER_KEYS: &[&str] = &[
    "transaction.state.log.replication.factor",
    "transaction.state.log.min.isr",
    // Kafka's cleaner threads are Strom's shards.
    "log.cleaner.threads",
];

impl BrokerConfig {
    /// Sets one broker config by its Kafka name.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        let int = |min: i64, max: i64| -> Result<i64, ConfigError> {
            let n: i64 = value
                .trim()
                .parse()
                .map_err(|_| bad(key, value, "not an integer"))?;
            if n < min || n > max {
                return Err(bad(key, value, &format!("must be in [{min}, {max}]")));
            }
            Ok(n)
        };
        match key {
            "num.partitions" => self.num_partitions = int(1, 1_000_000)? as i32,
            "auto.create.topics.enable" => {
                self.auto_create_topics = match value.trim().to_ascii_lowercase().as_str() {
                    "true" => true,
                    "false" => false,
                    _ => return Err(bad(key, value, "must be true or false")),
                }
            }
            "socket.request.max.bytes" => {
                self.socket_request_max_bytes = int(1024, i32::MAX as i64)? as usize
            }
            "fetch.max.bytes" => self.fetch_max_bytes = int(1024, i32::MAX as i64)? as usize,
            "queued.max.request.bytes" => {
                self.queued_max_request_bytes = match int(-1, i64::MAX)? {
                    -1 => None,
                    0 => return Err(bad(key, value, "must be -1 (unbounded) or positive")),
                    n => Some(n as usize),
                }
            }
            "connections.max.idle.ms" => self.connections_max_idle_ms = int(1, i64::MAX)? as u64,
            "max.connections" => self.max_connections = int(1, i32::MAX as i64)? as usize,
            "max.connections.per.ip" => {
                self.max_connections_per_ip = Some(int(1, i32::MAX as i64)? as usize)
            }
            "default.replication.factor" => {
                self.default_replication_factor = int(1, i16::MAX as i64)? as i32
            }
            "offsets.topic.replication.factor" => {
                self.offsets_topic_replication_factor = int(1, i16::MAX as i64)? as i32
            }
            "node.id" | "broker.id" => self.node_id = int(0, i32::MAX as i64)? as i32,
            "group.initial.rebalance.delay.ms" => {
                self.groups.initial_rebalance_delay_ms = int(0, i32::MAX as i64)?
            }
            "group.min.session.timeout.ms" => {
                self.groups.min_session_timeout_ms = int(1, i32::MAX as i64)? as i32
            }
            "group.max.session.timeout.ms" => {
                self.groups.max_session_timeout_ms = int(1, i32::MAX as i64)? as i32
            }
            "group.max.size" => self.groups.max_group_size = int(1, i32::MAX as i64)? as usize,
            "offsets.topic.num.partitions" => {
                self.groups.offsets_topic_num_partitions = int(1, 1000)? as i32
            }
            "offsets.topic.segment.bytes" => {
                self.groups.offsets_topic_segment_bytes = int(1, i32::MAX as i64)? as u64
            }
            "offsets.retention.minutes" => {
                self.groups.offsets_retention_ms = int(1, i64::MAX / 60_000)?.saturating_mul(60_000)
            }
            "offsets.retention.check.interval.ms" => {
                self.groups.offsets_retention_check_interval_ms = int(1, i64::MAX)?
            }
            // Strom's own: how often the coordinator's timer checks session,
            // rebalance and retention deadlines. Requests that read group
            // membership apply passed deadlines themselves, so this only
            // bounds how late a silent group is cleaned up.
            "strom.group.tick.interval.ms" => {
                self.groups.tick_interval_ms = int(1, i64::from(u32::MAX))? as u64
            }
            "offset.metadata.max.bytes" => {
                self.groups.offset_metadata_max_bytes = int(0, i16::MAX as i64)? as usize
            }
            "log.cleaner.enable" => {
                self.cleaner.enable = match value.trim().to_ascii_lowercase().as_str() {
                    "true" => true,
                    "false" => false,
                    _ => return Err(bad(key, value, "must be true or false")),
                }
            }
            "log.cleaner.backoff.ms" => self.cleaner.backoff_ms = int(1, i64::MAX)? as u64,
            "log.cleaner.dedupe.buffer.size" => {
                self.cleaner.dedupe_buffer_bytes = int(1024 * 1024, i64::MAX)? as u64
            }
            "log.cleaner.io.max.bytes.per.second" => {
                let rate: f64 = value
                    .trim()
                    .parse()
                    .map_err(|_| bad(key, value, "not a number"))?;
                if rate.is_nan() || rate <= 0.0 {
                    return Err(bad(key, value, "must be positive"));
                }
                self.cleaner.io_max_bytes_per_second = rate;
            }
            "log.dirs" | "log.dir" => self.data_dir = PathBuf::from(value),
            "log.retention.hours" => self.set_topic_default(
                key,
                "retention.ms",
                &int(-1, i64::MAX / 3_600_000)?
                    .saturating_mul(3_600_000)
                    .to_string(),
            )?,
            "log.retention.minutes" => self.set_topic_default(
                key,
                "retention.ms",
                &int(-1, i64::MAX / 60_000)?
                    .saturating_mul(60_000)
                    .to_string(),
            )?,
            "schema.registry.listeners" => {
                let listen = strom_registry::parse_listener(value.trim())
                    .map_err(|e| bad(key, value, &e.to_string()))?;
                self.schema_registry_listen = Some(listen);
            }
            k if crate::cluster_config::CLUSTER_KEYS.contains(&k) => self
                .cluster
                .set(k, value)
                .map_err(|e| bad(key, value, &e))?,
            k if IGNORED_BROKER_KEYS.contains(&k) => {
                int(1, i16::MAX as i64)?;
            }
            k => {
                let Some((_, topic_key)) = BROKER_TOPIC_KEYS.iter().find(|(b, _)| *b == k) else {
                    return Err(ConfigError::UnknownKey(k.to_string()));
                };
                self.set_topic_default(key, topic_key, value)?;
            }
        }
        Ok(())
    }

    fn set_topic_default(
        &mut self,
        broker_key: &str,
        topic_key: &str,
        value: &str,
    ) -> Result<(), ConfigError> {
        let v = validate_topic_config(topic_key, value).map_err(|e| match e {
            ConfigError::BadValue { value, reason, .. } => ConfigError::BadValue {
                key: broker_key.to_string(),
                value,
                reason,
            },
            other => other,
        })?;
        self.topic_defaults.insert(topic_key.to_string(), v);
        Ok(())
    }

    /// Applies a TOML config file's text. Dotted keys (`log.retention.ms = 1`)
    /// and quoted keys (`"log.retention.ms" = 1`) both work.
    pub fn apply_toml(&mut self, text: &str) -> Result<(), ConfigError> {
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| bad("<file>", "", &e.to_string()))?;
        let mut flat = Vec::new();
        flatten("", &table, &mut flat);
        for (key, value) in flat {
            let value = match value {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                toml::Value::Float(f) => f.to_string(),
                other => return Err(bad(&key, &other.to_string(), "unsupported value type")),
            };
            self.set(&key, &value)?;
        }
        Ok(())
    }

    /// The effective `LogConfig` of a topic with these topic configs.
    pub fn log_config(&self, topic_configs: &BTreeMap<String, String>) -> LogConfig {
        self.log_config_with(&BTreeMap::new(), topic_configs)
    }

    /// The effective `LogConfig` of a topic: Kafka's defaults, then the
    /// broker's static topic defaults, then the dynamic ones
    /// ([`dynamic_topic_defaults`]), then the topic's own configs.
    pub fn log_config_with(
        &self,
        dynamic: &BTreeMap<String, (String, i8)>,
        topic_configs: &BTreeMap<String, String>,
    ) -> LogConfig {
        let mut cfg = LogConfig::default();
        let dynamic = dynamic.iter().map(|(k, (v, _))| (k, v));
        for (k, v) in self
            .topic_defaults
            .iter()
            .chain(dynamic)
            .chain(topic_configs.iter())
        {
            apply_to_log_config(&mut cfg, k, v);
        }
        cfg
    }

    /// Checks the keys that must agree with each other (once every key is
    /// set): a frame may be as large as `socket.request.max.bytes`, so the
    /// request budget must hold one, as Kafka requires.
    pub fn check(&self) -> Result<(), ConfigError> {
        self.cluster
            .check(self.node_id)
            .map_err(|e| bad("controller.quorum.voters", "", &e))?;
        if let Some(queued) = self.queued_max_request_bytes {
            if queued < self.socket_request_max_bytes {
                return Err(bad(
                    "queued.max.request.bytes",
                    &queued.to_string(),
                    &format!(
                        "must be -1 or at least socket.request.max.bytes ({})",
                        self.socket_request_max_bytes
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The effective `max.connections.per.ip`.
    pub fn max_connections_per_ip(&self) -> usize {
        self.max_connections_per_ip.unwrap_or(self.max_connections)
    }

    /// Records the port the broker actually listens on. A listen address
    /// with port 0 (the kernel picks one) would otherwise be advertised in
    /// Metadata as port 0, and clients could not reach the broker.
    pub fn set_bound_port(&mut self, port: u16) {
        if let Some((host, "0")) = self.listen.rsplit_once(':') {
            self.listen = format!("{host}:{port}");
        }
    }

    /// Address given to clients: the advertised listener or the listen address.
    pub fn advertised(&self) -> (String, i32) {
        let addr = self.advertised_listener.as_deref().unwrap_or(&self.listen);
        match addr.rsplit_once(':') {
            Some((host, port)) => {
                let host = if host.is_empty() || host == "0.0.0.0" {
                    "localhost"
                } else {
                    host
                };
                (
                    host.trim_matches(|c| c == '[' || c == ']').to_string(),
                    port.parse().unwrap_or(9092),
                )
            }
            None => (addr.to_string(), 9092),
        }
    }
}

fn flatten(prefix: &str, table: &toml::Table, out: &mut Vec<(String, toml::Value)>) {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(t) => flatten(&key, t, out),
            other => out.push((key, other.clone())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_zero_is_advertised_as_the_bound_port() {
        let mut c = BrokerConfig {
            listen: "127.0.0.1:0".to_string(),
            ..BrokerConfig::default()
        };
        c.set_bound_port(40123);
        assert_eq!(c.advertised(), ("127.0.0.1".to_string(), 40123));
        // A concrete port is kept.
        let mut c = BrokerConfig {
            listen: "0.0.0.0:9092".to_string(),
            ..BrokerConfig::default()
        };
        c.set_bound_port(40123);
        assert_eq!(c.advertised(), ("localhost".to_string(), 9092));
    }

    #[test]
    fn toml_dotted_and_quoted_keys() {
        let mut c = BrokerConfig::default();
        c.apply_toml(
            "num.partitions = 3\n\"log.retention.ms\" = 1000\nauto.create.topics.enable = false\n",
        )
        .unwrap();
        assert_eq!(c.num_partitions, 3);
        assert!(!c.auto_create_topics);
        assert_eq!(c.log_config(&BTreeMap::new()).retention_ms, 1000);
    }

    #[test]
    fn budget_and_connection_keys() {
        let mut c = BrokerConfig::default();
        assert_eq!(c.fetch_max_bytes, 57_671_680);
        assert_eq!(c.queued_max_request_bytes, Some(100 << 20));
        assert_eq!(c.connections_max_idle_ms, 600_000);
        assert_eq!(c.max_connections_per_ip(), c.max_connections);
        c.apply_toml(
            "fetch.max.bytes = 1048576\nqueued.max.request.bytes = -1\n\
             connections.max.idle.ms = 1000\nmax.connections = 7\n",
        )
        .unwrap();
        assert_eq!(c.fetch_max_bytes, 1 << 20);
        assert_eq!(c.queued_max_request_bytes, None);
        assert_eq!(c.connections_max_idle_ms, 1000);
        assert_eq!(c.max_connections_per_ip(), 7);
        c.apply_toml("max.connections.per.ip = 3").unwrap();
        assert_eq!(c.max_connections_per_ip(), 3);
        assert!(c.apply_toml("queued.max.request.bytes = 0").is_err());
        assert!(c.check().is_ok());
        c.apply_toml("queued.max.request.bytes = 1048576").unwrap();
        assert!(c.check().is_err(), "smaller than socket.request.max.bytes");
        c.apply_toml("socket.request.max.bytes = 1048576").unwrap();
        assert!(c.check().is_ok());
        assert!(c.apply_toml("fetch.max.bytes = 10").is_err());
        assert!(c.apply_toml("max.connections = 0").is_err());
    }

    #[test]
    fn unknown_key_and_bad_value_are_named() {
        let mut c = BrokerConfig::default();
        let e = c.apply_toml("no.such.key = 1").unwrap_err();
        assert!(e.to_string().contains("no.such.key"));
        let e = c.apply_toml("num.partitions = \"x\"").unwrap_err();
        assert!(e.to_string().contains("num.partitions"));
    }

    #[test]
    fn compaction_configs_reach_the_log_and_the_cleaner() {
        let mut c = BrokerConfig::default();
        assert!(c.cleaner.enable);
        assert_eq!(c.cleaner.backoff_ms, 15_000);
        c.apply_toml(
            "log.cleaner.backoff.ms = 200\nlog.cleaner.dedupe.buffer.size = 2097152\n\
             log.cleaner.io.max.bytes.per.second = 1e6\nlog.cleaner.threads = 4\n\
             log.cleaner.min.cleanable.ratio = 0.25\noffsets.topic.segment.bytes = 16384\n",
        )
        .unwrap();
        assert_eq!(c.cleaner.backoff_ms, 200);
        assert_eq!(c.cleaner.dedupe_buffer_bytes, 2 << 20);
        assert_eq!(c.cleaner.io_max_bytes_per_second, 1e6);
        assert_eq!(c.groups.offsets_topic_segment_bytes, 16384);
        assert!(c
            .apply_toml("log.cleaner.io.max.bytes.per.second = 0")
            .is_err());
        assert!(c.apply_toml("log.cleaner.enable = maybe").is_err());
        let mut t = BTreeMap::new();
        for (k, v) in [
            ("cleanup.policy", "delete,compact"),
            ("delete.retention.ms", "1000"),
            ("min.compaction.lag.ms", "5"),
            ("max.compaction.lag.ms", "60000"),
        ] {
            t.insert(k.to_string(), validate_topic_config(k, v).unwrap());
        }
        let cfg = c.log_config(&t);
        assert!(cfg.cleanup_compact && cfg.cleanup_delete);
        assert_eq!(cfg.min_cleanable_dirty_ratio, 0.25);
        assert_eq!(
            (
                cfg.delete_retention_ms,
                cfg.min_compaction_lag_ms,
                cfg.max_compaction_lag_ms
            ),
            (1000, 5, 60000)
        );
        t.insert("cleanup.policy".into(), "compact".into());
        let cfg = c.log_config(&t);
        assert!(cfg.cleanup_compact && !cfg.cleanup_delete);
        assert!(!c.log_config(&BTreeMap::new()).cleanup_compact);
    }

    #[test]
    fn topic_configs_map_to_log_config() {
        let c = BrokerConfig::default();
        let mut t = BTreeMap::new();
        t.insert(
            "segment.bytes".to_string(),
            validate_topic_config("segment.bytes", "4096").unwrap(),
        );
        t.insert(
            "message.timestamp.type".to_string(),
            validate_topic_config("message.timestamp.type", "logappendtime").unwrap(),
        );
        let cfg = c.log_config(&t);
        assert_eq!(cfg.segment_bytes, 4096);
        assert!(cfg.log_append_time);
        assert!(validate_topic_config("retention.ms", "-2").is_err());
        assert!(validate_topic_config("bogus", "1").is_err());
    }
}
