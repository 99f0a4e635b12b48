//! strom-bench library: the pieces of `strom-bench run` (OpenMessaging
//! Benchmark workloads over the Kafka protocol) and `strom-bench report`.
//!
//! Module map, in the order data flows through a run:
//! - `workload`: parses and validates an OMB workload YAML file.
//! - `kafka`: a minimal blocking Kafka-protocol client (framing, ApiVersions
//!   negotiation, CreateTopics, Metadata, ListOffsets, InitProducerId)
//!   built on the `kafka-protocol` crate. Nothing in it knows about Strom.
//! - `records`: builds RecordBatch v2 for producers (with an idempotent
//!   producer's id, epoch and sequence, and compressed with the engine's
//!   codecs) and walks fetched batches for consumers (inflating compressed
//!   ones; payload timestamps for end-to-end latency).
//! - `pacer`: the fixed-rate schedule of intended send times (pure logic,
//!   driven by any clock, so tests use a simulated one).
//! - `latency`: HdrHistogram recording measured from the intended send
//!   time, which corrects for coordinated omission.
//! - `producer` / `consumer`: one thread (plus an ack reader) per client
//!   connection, pipelined produce requests (per-partition sequence
//!   numbers when idempotent), long-poll fetches.
//! - `run`: `strom-bench run`: orchestration, warm-up, progress line,
//!   summary table; writes the result through `report` and `plot`.
//! - `report`: the result JSON schema, machine info, the README table and
//!   the side-by-side comparison of several runs (`strom-bench compare`).
//! - `affinity`: `--cpus`, the CPU list parser and sched_setaffinity.
//! - `plot`: SVG plots (throughput over time, latency percentiles).

pub mod affinity;
pub mod consumer;
pub mod kafka;
pub mod latency;
pub mod pacer;
pub mod plot;
pub mod producer;
pub mod records;
pub mod report;
pub mod run;
pub mod workload;
