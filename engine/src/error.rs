//! Typed errors of the engine. A leaf: it imports nothing from the crate,
//! so every module can use it without an import circle.

use thiserror::Error;

/// Why a record batch was rejected. Nothing of a rejected append is written.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum BatchError {
    #[error("batch truncated: need {need} bytes, have {have}")]
    Truncated { need: usize, have: usize },
    #[error("unsupported magic byte {0} (only RecordBatch v2 is accepted)")]
    BadMagic(i8),
    #[error("invalid batch length {0}")]
    BadLength(i32),
    #[error("invalid record count {record_count} / last offset delta {last_offset_delta}")]
    BadCount {
        record_count: i32,
        last_offset_delta: i32,
    },
    #[error("CRC32C mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    BadCrc { stored: u32, computed: u32 },
    #[error("empty batch")]
    Empty,
    #[error("batch of {bytes} bytes exceeds max.message.bytes {max}")]
    TooLarge { bytes: usize, max: usize },
    /// `recordCount != lastOffsetDelta + 1`: the batch claims an offset span
    /// its records do not fill (Kafka: "Inconsistent batch offset range").
    #[error("inconsistent batch offset range: record count {record_count}, last offset delta {last_offset_delta}")]
    InconsistentOffsetRange {
        record_count: i32,
        last_offset_delta: i32,
    },
    /// More records than the uncompressed bytes can hold (a record takes at
    /// least 7 bytes): the count, and so the offset span, is a lie.
    #[error(
        "record count {record_count} does not fit in {records_bytes} bytes of uncompressed records"
    )]
    RecordCountTooLarge {
        record_count: i32,
        records_bytes: usize,
    },
    /// A client may not write control batches (transaction markers).
    #[error("clients may not write control batches")]
    ControlBatch,
    /// A transactional batch: Strom has no transactions yet.
    #[error("transactional batches are not supported (no transactions yet)")]
    Transactional,
    /// A producer id without an epoch or a sequence (or a negative id other
    /// than -1, "no producer"): the idempotence fields contradict each other.
    #[error(
        "invalid idempotence fields: producer id {producer_id}, epoch {producer_epoch}, base sequence {base_sequence}"
    )]
    InvalidProducerFields {
        producer_id: i64,
        producer_epoch: i16,
        base_sequence: i32,
    },
    /// A CreateTime timestamp outside `[now - message.timestamp.before.max.ms,
    /// now + message.timestamp.after.max.ms]` (Kafka: INVALID_TIMESTAMP).
    #[error("timestamp {timestamp} is out of range: it should be within [{earliest}, {latest}]")]
    TimestampOutOfRange {
        timestamp: i64,
        earliest: i64,
        latest: i64,
    },
    /// A replica append whose first batch does not start at the log end.
    #[error("replica batch starts at offset {base_offset}, the log ends at {log_end_offset}")]
    NotAtLogEnd {
        base_offset: i64,
        log_end_offset: i64,
    },
    /// A replica append whose batch does not start right after the one
    /// before it.
    #[error("replica batch starts at offset {base_offset}, expected {expected}")]
    NotContiguous { base_offset: i64, expected: i64 },
}

/// Why an idempotent batch was refused. Nothing of the request is appended.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum ProducerError {
    /// Kafka: INVALID_RECORD (87).
    #[error("invalid sequence number {sequence} for producer {producer_id}")]
    InvalidSequence { producer_id: i64, sequence: i32 },
    /// Kafka: UNKNOWN_PRODUCER_ID (59).
    #[error(
        "no state for producer {producer_id} and its batch starts at sequence {sequence}, not 0"
    )]
    UnknownProducerId {
        producer_id: i64,
        epoch: i16,
        sequence: i32,
    },
    /// Kafka: INVALID_PRODUCER_EPOCH (47).
    #[error(
        "producer {producer_id} epoch {epoch} is older than the current epoch {current_epoch}"
    )]
    InvalidProducerEpoch {
        producer_id: i64,
        epoch: i16,
        current_epoch: i16,
    },
    /// Kafka: OUT_OF_ORDER_SEQUENCE_NUMBER (45). `expected` is the sequence
    /// that would have been accepted.
    #[error("producer {producer_id} epoch {epoch}: sequence {sequence}, expected {expected}")]
    OutOfOrderSequence {
        producer_id: i64,
        epoch: i16,
        sequence: i32,
        expected: i32,
    },
}

#[derive(Debug, Error)]
pub enum EngineError {
    #[error("invalid record batch: {0}")]
    Batch(#[from] BatchError),
    #[error("offset {offset} out of range [{log_start}, {log_end}]")]
    OffsetOutOfRange {
        offset: i64,
        log_start: i64,
        log_end: i64,
    },
    #[error("no space left on device")]
    NoSpace,
    #[error("log is closed")]
    Closed,
    #[error("corrupt log: {0}")]
    Corrupt(String),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("idempotent producer: {0}")]
    Producer(#[from] ProducerError),
    /// A replica append to a log this broker leads (at `epoch`): its
    /// batches would land inside the epoch this broker started.
    #[error("the log is led here at epoch {epoch}; it takes no replica batches")]
    LedHere { epoch: i32 },
}

impl EngineError {
    /// Maps an I/O error, turning ENOSPC into the typed `NoSpace`.
    pub fn from_io(e: std::io::Error) -> EngineError {
        if e.raw_os_error() == Some(libc::ENOSPC) {
            EngineError::NoSpace
        } else {
            EngineError::Io(e)
        }
    }
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;
