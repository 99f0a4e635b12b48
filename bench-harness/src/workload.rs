//! OpenMessaging Benchmark workload files.
//!
//! The keys are OMB's (camelCase). Unknown keys are rejected, so a typo does
//! not silently run a different benchmark; every error names the key.

use std::path::Path;

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error("cannot read workload file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("workload {path}: {message}")]
    Parse { path: String, message: String },
    #[error("workload {path}: key `{key}`: {message}")]
    BadValue {
        path: String,
        key: &'static str,
        message: String,
    },
}

/// One OMB workload. Field names map to OMB's YAML keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Workload {
    pub name: String,
    pub topics: u32,
    pub partitions_per_topic: u32,
    /// OMB's key distributor. Only `NO_KEY` is implemented: records carry a
    /// key of `keySizeBytes` (if set) but partitioning is sticky.
    #[serde(default)]
    pub key_distributor: Option<String>,
    #[serde(default)]
    pub key_size_bytes: Option<u32>,
    pub message_size: u32,
    #[serde(default)]
    pub use_randomized_payloads: Option<bool>,
    #[serde(default)]
    pub random_bytes_ratio: Option<f64>,
    #[serde(default)]
    pub randomized_payload_pool_size: Option<u32>,
    #[serde(default)]
    pub payload_file: Option<String>,
    pub subscriptions_per_topic: u32,
    pub consumer_per_subscription: u32,
    pub producers_per_topic: u32,
    /// Total messages per second over all producers; 0 means as fast as possible.
    pub producer_rate: f64,
    #[serde(default, rename = "consumerBacklogSizeGB")]
    pub consumer_backlog_size_gb: f64,
    #[serde(default)]
    pub backlog_drain_ratio: Option<f64>,
    pub test_duration_minutes: f64,
    #[serde(default)]
    pub warmup_duration_minutes: Option<f64>,
}

/// The longest run a workload may ask for; a guard against unit mistakes.
const MAX_TEST_DURATION_MINUTES: f64 = 24.0 * 60.0;
/// Kafka's default `message.max.bytes` is about 1 MiB.
const MAX_MESSAGE_SIZE_BYTES: u32 = 1 << 20;
const MAX_PARTITIONS_PER_TOPIC: u32 = 100_000;

impl Workload {
    pub fn from_file(path: &Path) -> Result<Workload, WorkloadError> {
        let text = std::fs::read_to_string(path).map_err(|source| WorkloadError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Workload::parse(&text, &path.display().to_string())
    }

    /// Parses and validates workload YAML; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Workload, WorkloadError> {
        let w: Workload = serde_yaml::from_str(text).map_err(|e| WorkloadError::Parse {
            path: origin.to_string(),
            message: e.to_string(),
        })?;
        w.validate(origin)?;
        Ok(w)
    }

    pub fn validate(&self, origin: &str) -> Result<(), WorkloadError> {
        let bad = |key: &'static str, message: String| WorkloadError::BadValue {
            path: origin.to_string(),
            key,
            message,
        };
        if self.name.trim().is_empty() {
            return Err(bad("name", "must not be empty".into()));
        }
        if self.topics == 0 {
            return Err(bad("topics", "must be at least 1".into()));
        }
        if self.partitions_per_topic == 0 || self.partitions_per_topic > MAX_PARTITIONS_PER_TOPIC {
            return Err(bad(
                "partitionsPerTopic",
                format!(
                    "must be 1..={MAX_PARTITIONS_PER_TOPIC}, got {}",
                    self.partitions_per_topic
                ),
            ));
        }
        if self.message_size == 0 || self.message_size > MAX_MESSAGE_SIZE_BYTES {
            return Err(bad(
                "messageSize",
                format!(
                    "must be 1..={MAX_MESSAGE_SIZE_BYTES}, got {}",
                    self.message_size
                ),
            ));
        }
        if self.producers_per_topic == 0 {
            return Err(bad("producersPerTopic", "must be at least 1".into()));
        }
        if self.subscriptions_per_topic > 0 && self.consumer_per_subscription == 0 {
            return Err(bad(
                "consumerPerSubscription",
                "must be at least 1 when subscriptionsPerTopic > 0".into(),
            ));
        }
        if self.consumer_per_subscription > self.partitions_per_topic {
            return Err(bad(
                "consumerPerSubscription",
                format!(
                    "{} consumers would leave some without a partition (partitionsPerTopic is {})",
                    self.consumer_per_subscription, self.partitions_per_topic
                ),
            ));
        }
        if !self.producer_rate.is_finite() || self.producer_rate < 0.0 {
            return Err(bad(
                "producerRate",
                format!("must be >= 0 (0 = max rate), got {}", self.producer_rate),
            ));
        }
        if !self.consumer_backlog_size_gb.is_finite() || self.consumer_backlog_size_gb < 0.0 {
            return Err(bad(
                "consumerBacklogSizeGB",
                format!("must be >= 0, got {}", self.consumer_backlog_size_gb),
            ));
        }
        if !(self.test_duration_minutes > 0.0
            && self.test_duration_minutes <= MAX_TEST_DURATION_MINUTES)
        {
            return Err(bad(
                "testDurationMinutes",
                format!(
                    "must be in (0, {MAX_TEST_DURATION_MINUTES}], got {}",
                    self.test_duration_minutes
                ),
            ));
        }
        if let Some(w) = self.warmup_duration_minutes {
            if !(0.0..=MAX_TEST_DURATION_MINUTES).contains(&w) {
                return Err(bad(
                    "warmupDurationMinutes",
                    format!("must be in [0, {MAX_TEST_DURATION_MINUTES}], got {w}"),
                ));
            }
        }
        if let Some(k) = &self.key_distributor {
            if k != "NO_KEY" {
                return Err(bad(
                    "keyDistributor",
                    format!("only NO_KEY is implemented, got {k}"),
                ));
            }
        }
        if let Some(k) = self.key_size_bytes {
            if k > MAX_MESSAGE_SIZE_BYTES {
                return Err(bad(
                    "keySizeBytes",
                    format!("must be <= {MAX_MESSAGE_SIZE_BYTES}, got {k}"),
                ));
            }
        }
        if let Some(r) = self.random_bytes_ratio {
            if !(0.0..=1.0).contains(&r) {
                return Err(bad(
                    "randomBytesRatio",
                    format!("must be in [0, 1], got {r}"),
                ));
            }
        }
        if let Some(n) = self.randomized_payload_pool_size {
            if n == 0 || n > 100_000 {
                return Err(bad(
                    "randomizedPayloadPoolSize",
                    format!("must be 1..=100000, got {n}"),
                ));
            }
        }
        if let Some(r) = self.backlog_drain_ratio {
            if !(r > 0.0 && r <= 1.0) {
                return Err(bad(
                    "backlogDrainRatio",
                    format!("must be in (0, 1], got {r}"),
                ));
            }
        }
        Ok(())
    }

    /// A file-name-safe version of the workload name.
    pub fn slug(&self) -> String {
        let s: String = self
            .name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        s.trim_matches('-').to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "
name: 1 topic / 16 partitions / 1kb
topics: 1
partitionsPerTopic: 16
messageSize: 1024
payloadFile: payload/payload-1Kb.data
subscriptionsPerTopic: 1
consumerPerSubscription: 1
producersPerTopic: 1
producerRate: 50000
consumerBacklogSizeGB: 0
testDurationMinutes: 0.5
";

    #[test]
    fn parses_omb_workload() {
        let w = Workload::parse(GOOD, "good.yaml").unwrap();
        assert_eq!(w.partitions_per_topic, 16);
        assert_eq!(w.producer_rate, 50000.0);
        assert_eq!(w.test_duration_minutes, 0.5);
        assert_eq!(w.payload_file.as_deref(), Some("payload/payload-1Kb.data"));
        assert_eq!(w.slug(), "1-topic---16-partitions---1kb");
    }

    #[test]
    fn optional_omb_keys_are_accepted() {
        let text = format!("{GOOD}keySizeBytes: 16\nuseRandomizedPayloads: true\nrandomBytesRatio: 0.5\nrandomizedPayloadPoolSize: 100\nkeyDistributor: NO_KEY\nwarmupDurationMinutes: 0.1\n");
        let w = Workload::parse(&text, "x").unwrap();
        assert_eq!(w.key_size_bytes, Some(16));
        assert_eq!(w.use_randomized_payloads, Some(true));
    }

    #[test]
    fn unknown_key_is_named() {
        let text = format!("{GOOD}partitionz: 3\n");
        let e = Workload::parse(&text, "x").unwrap_err().to_string();
        assert!(e.contains("partitionz"), "{e}");
    }

    #[test]
    fn wrong_type_is_named() {
        let text = GOOD.replace("partitionsPerTopic: 16", "partitionsPerTopic: sixteen");
        let e = Workload::parse(&text, "x").unwrap_err().to_string();
        assert!(e.contains("partitionsPerTopic"), "{e}");
    }

    #[test]
    fn missing_key_is_named() {
        let text = GOOD.replace("messageSize: 1024\n", "");
        let e = Workload::parse(&text, "x").unwrap_err().to_string();
        assert!(e.contains("messageSize"), "{e}");
    }

    #[test]
    fn bad_values_are_named() {
        for (from, to, key) in [
            (
                "partitionsPerTopic: 16",
                "partitionsPerTopic: 0",
                "partitionsPerTopic",
            ),
            ("producerRate: 50000", "producerRate: -1", "producerRate"),
            (
                "testDurationMinutes: 0.5",
                "testDurationMinutes: 0",
                "testDurationMinutes",
            ),
            ("messageSize: 1024", "messageSize: 0", "messageSize"),
            (
                "consumerPerSubscription: 1",
                "consumerPerSubscription: 17",
                "consumerPerSubscription",
            ),
            (
                "consumerBacklogSizeGB: 0",
                "consumerBacklogSizeGB: -2",
                "consumerBacklogSizeGB",
            ),
        ] {
            let text = GOOD.replace(from, to);
            assert_ne!(text, GOOD);
            let e = Workload::parse(&text, "x").unwrap_err().to_string();
            assert!(e.contains(key), "{key}: {e}");
        }
    }

    #[test]
    fn shipped_workloads_parse() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("workloads");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) == Some("yaml") {
                let w = Workload::from_file(&path).unwrap();
                assert_eq!(
                    format!("{}.yaml", w.name),
                    path.file_name().unwrap().to_str().unwrap()
                );
                n += 1;
            }
        }
        assert!(n >= 4, "{n} workloads");
    }
}
