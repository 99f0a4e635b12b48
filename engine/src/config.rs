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
    /// `cleanup.policy` includes `compact`: the log cleaner keeps the last
    /// record of each key in the closed segments.
    pub cleanup_compact: bool,
    /// `min.cleanable.dirty.ratio`: the share of the closed segments' bytes
    /// not yet cleaned at which the cleaner takes the log.
    pub min_cleanable_dirty_ratio: f64,
    /// `min.compaction.lag.ms`: a segment whose newest record is younger is
    /// not cleaned yet.
    pub min_compaction_lag_ms: i64,
    /// `max.compaction.lag.ms`: a dirty segment whose newest record is older
    /// is cleaned whatever the dirty ratio.
    pub max_compaction_lag_ms: i64,
    /// `delete.retention.ms`: how long a tombstone (a null value) stays in a
    /// cleaned segment, measured from its segment's newest timestamp.
    pub delete_retention_ms: i64,
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
    /// `min.insync.replicas`: an acks=all append needs at least this many
    /// in-sync replicas (the broker checks it; the log only carries it).
    pub min_insync_replicas: i32,
    /// Strom's own: a sync that finds the active segment grown by this many
    /// bytes since the last recovery point writes a new one, so recovery
    /// after a crash scans at most about this much of it (u64::MAX: never).
    pub recovery_point_bytes: u64,
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
            cleanup_compact: false,
            min_cleanable_dirty_ratio: 0.5,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
            delete_retention_ms: 86_400_000,
            max_message_bytes: 1024 * 1024 + 12,
            log_append_time: false,
            timestamp_before_max_ms: i64::MAX,
            timestamp_after_max_ms: 3_600_000,
            preallocate: true,
            min_insync_replicas: 1,
            recovery_point_bytes: 64 << 20,
        }
    }
}

/// The broker's log cleaner settings (Kafka's `log.cleaner.*`); Kafka's
/// cleaner threads are Strom's shards, each cleaning the logs it owns.
#[derive(Debug, Clone, PartialEq)]
pub struct CleanerConfig {
    /// `log.cleaner.enable`.
    pub enable: bool,
    /// `log.cleaner.backoff.ms`: the pause between passes over the logs.
    pub backoff_ms: u64,
    /// `log.cleaner.io.max.bytes.per.second`, per shard: reads and writes
    /// of cleans together.
    pub io_max_bytes_per_second: f64,
    /// `log.cleaner.dedupe.buffer.size`, divided among the shards: the
    /// bytes one clean's offset map may take.
    pub dedupe_buffer_bytes: u64,
}

impl Default for CleanerConfig {
    fn default() -> Self {
        CleanerConfig {
            enable: true,
            backoff_ms: 15_000,
            io_max_bytes_per_second: f64::MAX,
            dedupe_buffer_bytes: 128 << 20,
        }
    }
}
