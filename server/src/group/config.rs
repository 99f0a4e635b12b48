//! What a coordinator is given: its configuration (Kafka's broker config
//! names and defaults), the broker's answers about topics, a clock, and who
//! sent a request.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use strom_engine::PartitionLog;

/// Configuration with Kafka's broker config names and defaults.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// `offsets.topic.num.partitions`.
    pub offsets_topic_num_partitions: i32,
    /// `offsets.topic.segment.bytes` (Kafka's default: 100 MiB).
    pub offsets_topic_segment_bytes: u64,
    /// `group.initial.rebalance.delay.ms`: how long the first rebalance of
    /// an empty group waits for more members.
    pub initial_rebalance_delay_ms: i64,
    /// `group.min.session.timeout.ms`.
    pub min_session_timeout_ms: i32,
    /// `group.max.session.timeout.ms`.
    pub max_session_timeout_ms: i32,
    /// `group.max.size`.
    pub max_group_size: usize,
    /// `offsets.retention.minutes`, in ms.
    pub offsets_retention_ms: i64,
    /// `offsets.retention.check.interval.ms`.
    pub offsets_retention_check_interval_ms: i64,
    /// `offset.metadata.max.bytes`.
    pub offset_metadata_max_bytes: usize,
    /// How often the timer task checks session, rebalance and retention
    /// deadlines.
    pub tick_interval_ms: u64,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            offsets_topic_num_partitions: 50,
            offsets_topic_segment_bytes: 100 * 1024 * 1024,
            initial_rebalance_delay_ms: 3000,
            min_session_timeout_ms: 6000,
            max_session_timeout_ms: 1_800_000,
            max_group_size: i32::MAX as usize,
            offsets_retention_ms: 7 * 24 * 3600 * 1000,
            offsets_retention_check_interval_ms: 600_000,
            offset_metadata_max_bytes: 4096,
            tick_interval_ms: 100,
        }
    }
}

/// A wait for the broker to replicate a `__consumer_offsets` append.
pub type ReplicatedWait = Pin<Box<dyn Future<Output = Result<(), i16>>>>;

/// What the coordinator asks the broker about topics (commits for unknown
/// topic-partitions are refused), and how it waits for its appends to be
/// replicated.
pub trait TopicLookup {
    fn partition_exists(&self, topic: &str, partition: i32) -> bool;

    /// Resolves once `__consumer_offsets` partition `partition` holds
    /// everything before `end` on its in-sync replicas, or with the error
    /// code the commit answers (Kafka's GroupMetadataManager mapping). On
    /// one node an append synced locally is all there is: ready at once.
    fn wait_replicated(&self, _partition: i32, _log: &PartitionLog, _end: i64) -> ReplicatedWait {
        Box::pin(std::future::ready(Ok(())))
    }
}

/// Who sent a request: shown by DescribeGroups.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    pub client_id: String,
    /// As Kafka prints it, e.g. "/127.0.0.1".
    pub client_host: String,
}

/// Milliseconds since the Unix epoch; replaceable in tests.
pub type Clock = Rc<dyn Fn() -> i64>;

pub fn system_clock() -> Clock {
    Rc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    })
}
