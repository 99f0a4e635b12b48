//! Per-partition log configuration, with Kafka's names and defaults.

/// Configuration of one partition log. Field names follow Kafka's topic
/// configs (`segment.bytes` is `segment_bytes`, and so on).
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// `segment.bytes`: a segment rolls when it would grow past this.
    pub segment_bytes: u64,
    /// `segment.ms`: a segment rolls when its first batch is older than this.
    pub segment_ms: i64,
    /// `index.interval.bytes`: bytes between sparse index entries.
    pub index_interval_bytes: u32,
    /// `flush.messages`: fdatasync after this many messages (u64::MAX: never by count).
    pub flush_messages: u64,
    /// `flush.ms`: fdatasync at least this often while there is unsynced data.
    pub flush_ms: i64,
    /// `retention.ms`: delete closed segments whose newest record is older (-1: keep).
    pub retention_ms: i64,
    /// `retention.bytes`: delete oldest closed segments while the log is larger (-1: keep).
    pub retention_bytes: i64,
    /// `cleanup.policy` includes `delete`: `retention.ms` and
    /// `retention.bytes` apply. A compact-only log (`cleanup.policy=compact`)
    /// is never deleted by time or size, as in Kafka.
    pub cleanup_delete: bool,
    /// `max.message.bytes`: largest accepted batch.
    pub max_message_bytes: usize,
    /// `message.timestamp.type` is LogAppendTime.
    pub log_append_time: bool,
    /// `message.timestamp.before.max.ms`: a CreateTime batch whose
    /// timestamps lie further in the past than this is refused (Kafka 3.6+).
    pub timestamp_before_max_ms: i64,
    /// `message.timestamp.after.max.ms`: a CreateTime batch whose
    /// timestamps lie further in the future than this is refused (Kafka
    /// 4.0's default: one hour).
    pub timestamp_after_max_ms: i64,
    /// Preallocate segments to `segment_bytes` with fallocate.
    pub preallocate: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            index_interval_bytes: 4096,
            flush_messages: u64::MAX,
            flush_ms: 1000,
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            cleanup_delete: true,
            max_message_bytes: 1024 * 1024 + 12,
            log_append_time: false,
            timestamp_before_max_ms: i64::MAX,
            timestamp_after_max_ms: 3_600_000,
            preallocate: true,
        }
    }
}
