//! Consumer groups: Kafka's classic group protocol and committed offsets.
//!
//! Module map:
//! - `coordinator`: [`GroupCoordinator`], one per shard. It owns the groups
//!   whose `__consumer_offsets` partition lives on that shard and answers
//!   SyncGroup, Heartbeat, LeaveGroup (the membership state machine, with
//!   JoinGroup in `join`) and, in `offsets`, OffsetCommit, OffsetFetch,
//!   OffsetDelete, DeleteGroups, ListGroups and DescribeGroups.
//!   Single-threaded: state sits in a `RefCell`, no borrow is held across an
//!   `.await`.
//! - `state`: the plain data of a group and its members (generation, leader,
//!   selected protocol, committed offsets) and the pure rules over it.
//! - `records`: the `__consumer_offsets` key/value schemas (Kafka's
//!   OffsetCommitKey v1 / OffsetCommitValue v3) and RecordBatch framing.
//! - `find_coordinator`: FindCoordinator, which needs no group state.
//!
//! Coordinator logic only: nothing here knows about shards, connections or
//! the wire. `crate::coordinators` starts each shard's coordinator over its
//! `__consumer_offsets` partitions; `crate::api::groups` decodes group
//! requests and runs them there.
//!
//! Data flow: the broker routes a group request to the shard owning the
//! group's `__consumer_offsets` partition ([`offsets_partition_for`]); that
//! shard's coordinator answers it. Commits are appended to that partition's
//! log with `Durability::Synced` before the answer; at start the coordinator
//! replays the log to rebuild the committed offsets.

mod coordinator;
mod find_coordinator;
mod join;
mod offsets;
pub mod records;
mod state;

#[cfg(test)]
mod tests;

pub use coordinator::GroupCoordinator;
pub use find_coordinator::{find_coordinator, CoordinatorNode};
pub use state::GroupState;

use std::rc::Rc;

/// The internal topic holding committed offsets.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Versions of the group APIs this module implements: (api key, min, max).
pub const SUPPORTED_VERSIONS: &[(i16, i16, i16)] = &[
    (8, 2, 8),  // OffsetCommit
    (9, 1, 8),  // OffsetFetch
    (10, 0, 4), // FindCoordinator
    (11, 0, 9), // JoinGroup
    (12, 0, 4), // Heartbeat
    (13, 0, 5), // LeaveGroup
    (14, 0, 5), // SyncGroup
    (15, 0, 5), // DescribeGroups
    (16, 0, 5), // ListGroups
    (42, 0, 2), // DeleteGroups
    (47, 0, 0), // OffsetDelete
];

/// Configuration with Kafka's broker config names and defaults.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// `offsets.topic.num.partitions`.
    pub offsets_topic_num_partitions: i32,
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

/// What the coordinator asks the broker about topics (commits for unknown
/// topic-partitions are refused).
pub trait TopicLookup {
    fn partition_exists(&self, topic: &str, partition: i32) -> bool;
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

/// Java's `String.hashCode()` over UTF-16 code units.
pub fn java_string_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(c as i32))
}

/// The `__consumer_offsets` partition of a group, as Kafka computes it:
/// `Utils.abs(groupId.hashCode) % offsets.topic.num.partitions`.
pub fn offsets_partition_for(group_id: &str, num_partitions: i32) -> i32 {
    assert!(
        num_partitions > 0,
        "offsets.topic.num.partitions must be positive"
    );
    let h = java_string_hash(group_id);
    let abs = if h == i32::MIN { 0 } else { h.abs() };
    abs % num_partitions
}

/// Kafka's error codes used by the group APIs.
pub mod codes {
    pub const NONE: i16 = 0;
    pub const UNKNOWN_SERVER_ERROR: i16 = -1;
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    pub const OFFSET_METADATA_TOO_LARGE: i16 = 12;
    pub const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
    pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
    pub const NOT_COORDINATOR: i16 = 16;
    pub const ILLEGAL_GENERATION: i16 = 22;
    pub const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
    pub const INVALID_GROUP_ID: i16 = 24;
    pub const UNKNOWN_MEMBER_ID: i16 = 25;
    pub const INVALID_SESSION_TIMEOUT: i16 = 26;
    pub const REBALANCE_IN_PROGRESS: i16 = 27;
    pub const INVALID_COMMIT_OFFSET_SIZE: i16 = 28;
    pub const INVALID_REQUEST: i16 = 42;
    pub const KAFKA_STORAGE_ERROR: i16 = 56;
    pub const NON_EMPTY_GROUP: i16 = 68;
    pub const GROUP_ID_NOT_FOUND: i16 = 69;
    pub const MEMBER_ID_REQUIRED: i16 = 79;
    pub const FENCED_INSTANCE_ID: i16 = 82;
    pub const GROUP_MAX_SIZE_REACHED: i16 = 81;
    pub const GROUP_SUBSCRIBED_TO_TOPIC: i16 = 86;
}
