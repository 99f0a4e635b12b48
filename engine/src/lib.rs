//! strom-engine: the partition log.
//!
//! Module map (data flows top to bottom on append, bottom to top on read):
//! - `log`: [`PartitionLog`], the public API: append with a durability
//!   choice and an origin (a client's batches get offsets, a replica's keep
//!   their leader's), read by offset or timestamp up to a read bound,
//!   long-poll waits, flush, truncation, retention, close. One file per
//!   step of the data path:
//!   - `log/mod.rs`: the handle's open/close/delete, `tick`, accessors;
//!   - `log/state.rs`: the public types, the handle and the state the steps
//!     share (every step imports it; none imports `mod.rs`);
//!   - `log/files.rs`: the spare segment's name, index files written aside;
//!   - `log/segment.rs`: a segment's in-memory state, file names, size
//!     limits (no I/O);
//!   - `log/tail.rs`: the active segment's aligned tail buffer and its
//!     chunks (no I/O);
//!   - `log/append.rs`: validate, assign offsets (`AppendOrigin`), wait for
//!     durability;
//!   - `log/flush.rs`: flush rounds (group commit), write rounds for acks=1,
//!     write-behind, preallocation ahead of the writes;
//!   - `log/prealloc.rs`: how far ahead a log preallocates (a step that
//!     follows the write rate) and its claim on the preallocation budget
//!     (`io/budget.rs`);
//!   - `log/reclaim.rs`: an idle log's preallocation trimmed back to its
//!     data;
//!   - `log/roll.rs`: rolls, the spare segment, finishing a rolled segment;
//!   - `log/read.rs`: reads by offset, timestamp lookup, the read bound;
//!   - `log/truncate.rs`: `truncate_to(offset)`, and the scan and cut of a
//!     segment that recovery shares;
//!   - `log/recover.rs`: opening the segments after a clean shutdown or a
//!     crash, producer state rebuild;
//!   - `log/retention.rs`: deleting old segments;
//!   - `log/epochs.rs`: the leader epoch checkpoint, becoming leader at an
//!     epoch, an epoch's end offset.
//! - `batch`: Kafka RecordBatch v2 framing: validation (length, magic,
//!   CRC32C, record count against the offset span) and in-place offset
//!   assignment. Records are never decoded.
//! - `config`: [`LogConfig`], Kafka's topic configs for one log.
//! - `index`: the sparse offset index and time index entries (zerocopy,
//!   little-endian) and their lookups.
//! - `io`: the I/O seam: `Storage`/`StorageFile` traits, with `io::dma`
//!   (glommio DmaFile, O_DIRECT, io_uring) for production and `io::sim` (a
//!   seeded in-memory file system that tears writes, loses any subset of
//!   unsynced writes, fails fdatasync, flips bits, runs out of space) for
//!   tests, compiled only with `cfg(test)` or the `test-util` feature;
//!   `io::budget`, the bound on what all logs on a storage preallocate
//!   ahead of their data (a cap and a share of the free space).
//! - `batch`'s `build_batch*` are test-only the same way.
//! - `leader_epoch`: the leader epoch cache (epoch to start offset, Kafka's
//!   `LeaderEpochFileCache` rules) and its checkpoint text; no I/O (the
//!   log's `epochs.rs` keeps it on disk).
//! - `notify`: single-threaded broadcast used by long polls.
//! - `producer_state`: idempotent-producer dedup (epoch and last five
//!   sequence ranges per producer id), its snapshots and rebuild.
//! - `fuzzing`: the checks the fuzz targets (`fuzz/`) run over batch
//!   validation and recovery, shared with the tests that replay
//!   `fuzz/regressions/`; test-only like `io::sim`.
//! - `records`: the records inside a batch (keys, tombstones), read only by
//!   the log cleaner and the keyless-record check of compacted topics;
//!   rebuilding a batch with some of its records.
//! - `error`: typed errors (a leaf: it imports nothing from the crate).
//!
//! The on-disk format, byte by byte, with what the engine assumes about the
//! storage (what is atomic, what fdatasync guarantees), is in `FORMAT.md`.

// Nothing a request carries may reach a panic: no unwrap or expect, no
// unchecked index or slice, no arithmetic that can overflow, outside tests.
// Where an invariant makes one safe, a local `allow` says why; a broken
// internal invariant is an explicit `unreachable!` or `panic!` with its reason.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects
    )
)]

pub mod batch;
pub mod codec;
pub mod config;
pub mod error;
#[cfg(any(test, feature = "test-util"))]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    reason = "test-only code (cfg(test) or the test-util feature), never in the broker"
)]
pub mod fuzzing;
pub mod index;
pub mod io;
pub mod leader_epoch;
pub mod log;
pub mod notify;
pub mod producer_state;
pub mod records;

pub use config::LogConfig;
pub use error::{BatchError, EngineError};
pub use log::{
    time_waits, AppendInfo, AppendOrigin, AppendWaits, Durability, PartitionLog, ReadLimit,
    ReadResult,
};

/// The preempt timer for glommio executors that run logs: glommio's
/// default, 100 ms. A 1 ms timer looked about 20% faster in the engine bench
/// (glommio reaps O_DIRECT completions between task-queue runs), but with it
/// the executor sometimes went to sleep with I/O completed but not reaped
/// (one run sat 279 s in its read phase until a debugger attach woke it);
/// 4 of 300 short `strom-bench engine --sync interval --preempt-timer-ms 1`
/// runs hung, none of 300 at 100 ms. Keep it until that glommio race is
/// understood.
pub const EXECUTOR_PREEMPT_TIMER: std::time::Duration = std::time::Duration::from_millis(100);
