//! Cluster metadata: topics, partition counts, topic configs.
//!
//! Every shard holds an `Arc<Metadata>` snapshot, replaced as a whole when
//! shard 0 publishes a new version. The snapshot is persisted as JSON in the
//! data dir with write-tmp, fsync, rename, fsync-dir, so a crash leaves
//! either the old or the new version.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// File name of the metadata snapshot in the data dir.
pub const METADATA_FILE: &str = "strom-metadata.json";
/// Kafka's limit on topic name length.
pub const TOPIC_NAME_MAX_CHARS: usize = 249;
/// Upper bound on partitions per topic, so one request cannot make a shard
/// open millions of logs.
pub const PARTITIONS_PER_TOPIC_MAX: i32 = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMeta {
    pub id: Uuid,
    pub partitions: i32,
    /// Topic-level configs set explicitly (validated, normalized).
    pub configs: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    pub version: u64,
    pub cluster_id: String,
    pub topics: BTreeMap<String, TopicMeta>,
    /// Dynamic broker configs (IncrementalAlterConfigs on a broker
    /// resource), by resource name: "" for the cluster-wide default, the
    /// node id for one broker; each a map of broker key to validated value.
    #[serde(default)]
    pub broker_configs: BTreeMap<String, BTreeMap<String, String>>,
    /// In a cluster: the controller's image this snapshot was made from
    /// (brokers, partition leaders, replicas, ISR, epochs). The Raft log
    /// holds it, so it is not persisted here.
    #[serde(skip)]
    pub cluster: Option<std::sync::Arc<strom_controller::ClusterImage>>,
    /// In a cluster, while an admin change is being made: the replicas of
    /// each partition the change adds, by topic (`placement::plan`), for
    /// `cluster::records_for_change`. Empty in every published snapshot.
    #[serde(skip)]
    pub new_replicas: BTreeMap<String, Vec<Vec<i32>>>,
}

impl Metadata {
    pub fn new() -> Metadata {
        Metadata {
            version: 0,
            cluster_id: new_cluster_id(),
            topics: BTreeMap::new(),
            broker_configs: BTreeMap::new(),
            cluster: None,
            new_replicas: BTreeMap::new(),
        }
    }

    pub fn topic_by_id(&self, id: Uuid) -> Option<(&String, &TopicMeta)> {
        self.topics.iter().find(|(_, t)| t.id == id)
    }

    /// Loads the snapshot from `data_dir`, or a fresh one when there is none.
    pub fn load(data_dir: &Path) -> anyhow::Result<Metadata> {
        let path = data_dir.join(METADATA_FILE);
        match fs::read(&path) {
            Ok(bytes) => Ok(serde_json::from_slice(&bytes)
                .map_err(|e| anyhow::anyhow!("corrupt metadata file {}: {e}", path.display()))?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Metadata::new()),
            Err(e) => Err(anyhow::anyhow!("reading {}: {e}", path.display())),
        }
    }

    /// Writes the snapshot atomically: tmp file, fsync, rename, fsync dir.
    pub fn persist(&self, data_dir: &Path) -> std::io::Result<()> {
        let path = data_dir.join(METADATA_FILE);
        let tmp = data_dir.join(format!("{METADATA_FILE}.tmp"));
        let bytes = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        {
            let mut f = File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
        }
        fs::rename(&tmp, &path)?;
        File::open(data_dir)?.sync_all()?;
        Ok(())
    }
}

impl Default for Metadata {
    fn default() -> Self {
        Metadata::new()
    }
}

/// A cluster id in Kafka's format: 22 characters of URL-safe base64 of a UUID.
fn new_cluster_id() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let v = Uuid::new_v4().as_u128();
    (0..22u32)
        .map(|i| {
            let sextet = v.checked_shr(i.saturating_mul(6)).unwrap_or(0) & 63;
            ALPHABET
                .get(sextet as usize)
                .map_or('A', |&c| char::from(c))
        })
        .collect()
}

/// The shard that owns partition `(topic, partition)` among `shards`.
pub fn owner_shard(topic: &str, partition: i32, shards: usize) -> usize {
    debug_assert!(shards > 0);
    let h = crc32c::crc32c_append(crc32c::crc32c(topic.as_bytes()), &partition.to_be_bytes());
    (h as usize).checked_rem(shards).unwrap_or(0)
}

/// Directory of a partition's log: `<data-dir>/<topic>-<partition>`.
pub fn partition_dir(data_dir: &Path, topic: &str, partition: i32) -> PathBuf {
    data_dir.join(format!("{topic}-{partition}"))
}

/// Topics the broker itself writes; clients cannot create or produce to them.
pub const INTERNAL_TOPICS: &[&str] = &["__consumer_offsets", "__transaction_state"];

/// Kafka's topic name rule: 1..=249 of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("topic name is empty".into());
    }
    // The group coordinator owns these logs; a user topic of the same name
    // would open the same directories behind its back.
    if INTERNAL_TOPICS.contains(&name) {
        return Err(format!("`{name}` is an internal topic"));
    }
    if name == "." || name == ".." {
        return Err(format!("topic name cannot be `{name}`"));
    }
    if name.len() > TOPIC_NAME_MAX_CHARS {
        return Err(format!(
            "topic name is longer than {TOPIC_NAME_MAX_CHARS} characters"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '.' || *c == '_' || *c == '-'))
    {
        return Err(format!("topic name contains illegal character {c:?}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_topic_names_are_reserved() {
        assert!(validate_topic_name("__consumer_offsets").is_err());
        assert!(validate_topic_name("__consumer_offsets2").is_ok());
    }

    #[test]
    fn persist_and_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = Metadata::new();
        m.topics.insert(
            "t".into(),
            TopicMeta {
                id: Uuid::new_v4(),
                partitions: 3,
                configs: BTreeMap::new(),
            },
        );
        m.persist(dir.path()).unwrap();
        assert_eq!(Metadata::load(dir.path()).unwrap(), m);
    }

    #[test]
    fn topic_names() {
        assert!(validate_topic_name("a.b_c-1").is_ok());
        assert!(validate_topic_name("..").is_err());
        assert!(validate_topic_name("a/b").is_err());
        assert!(validate_topic_name(&"x".repeat(250)).is_err());
        assert_eq!(new_cluster_id().len(), 22);
    }
}
