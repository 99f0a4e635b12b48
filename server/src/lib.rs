//! strom-server: the broker.
//!
//! Module map (a request flows top to bottom, its response back up; every
//! `crate::` import points down this list, so no module imports one that
//! imports it back):
//! - `server`: starts the shards (glommio executors pinned to cores), the
//!   listeners (SO_REUSEPORT), the periodic log ticks and graceful shutdown.
//! - `conn`: one task per connection: frame reading with size limits and
//!   the shard's request budget, pipelined in-order responses, acks=0
//!   silence, the idle timeout (`connections.max.idle.ms`).
//! - `api`: the Kafka APIs, one module per API family (`api::groups` for
//!   the consumer-group APIs), dispatched by a single `match` over `ApiKey`
//!   in `api::dispatch`. `api::schema_validation` is the one place records
//!   are decoded, only for topics that validate against the schema
//!   registry (the strom-registry crate, which `main` starts on its own
//!   thread when `schema.registry.listeners` is set).
//! - `wire`: the Kafka wire format around a request's body: the response
//!   type (`Reply`), the parsed header (`RequestContext`), decoding behind
//!   `catch_unwind`, response frames (size, header, body).
//! - `scatter`: the one scatter-gather: runs a job per owner shard over the
//!   items it owns and gathers the results in request order (Produce,
//!   Fetch, ListOffsets).
//! - `coordinators`: each shard's group coordinator, started over the
//!   `__consumer_offsets` partitions placed on that shard (also registered
//!   as the shard's logs, so they replicate); in a cluster it loads and
//!   drops partitions as this node gains and loses their leadership;
//!   `api::groups` runs each group request on its coordinator's shard.
//! - `cluster_publish`: in a cluster, shard 0 follows the controller's
//!   images and publishes each to every shard as its metadata.
//! - `shard`: one per core. Owns the logs of the partitions placed on it, a
//!   read-only copy of the metadata, and the cross-shard job mesh used to run
//!   work on the shard that owns a partition. Shard 0 serializes metadata
//!   updates and publishes each new snapshot to every shard.
//! - `cluster`: the broker's side of the controller quorum
//!   (`strom-controller`): starting it, images into `Metadata`, admin
//!   changes into records proposed to the active controller.
//! - `cluster_upgrade`: a single node's topics moved into the cluster
//!   metadata when its data dir first starts as a cluster node.
//! - `placement`: where a new partition's replicas go (Kafka's rack-unaware
//!   assignment, manual assignments checked), and its record.
//! - `metadata`: the cluster metadata snapshot (topics, partition counts,
//!   topic configs), its atomic persistence in the data dir, and partition
//!   placement on shards.
//! - `config`: broker configuration (TOML file with Kafka's key names, CLI
//!   overrides) and topic-level configs mapped onto the engine's `LogConfig`.
//! - `cluster_config`: the cluster keys (`process.roles`,
//!   `controller.quorum.voters`, `controller.listener.names`, `listeners`).
//! - `group`: consumer groups, coordinator logic only: the classic group
//!   protocol, committed offsets in `__consumer_offsets`, FindCoordinator.
//!   One `GroupCoordinator` per shard owns the groups whose offsets
//!   partition is placed on that shard. Knows nothing of shards,
//!   connections or the wire.
//! - `registry_cluster`: the schema registry in a cluster: each node
//!   advertises its registry's URL as a per-broker config record, and
//!   the registry finds the writer's there.
//! - `producer_ids`: durable producer id allocation and InitProducerId
//!   (idempotent producers; the dedup itself is the engine's `producer_state`).
//! - `frame_pool`: warm buffers for large request frames.
//! - `request_budget`: the shard-wide budget of request bytes in flight
//!   (`queued.max.request.bytes`); a connection waits for it before it
//!   allocates a frame.
//! - `conn_limits`: broker-wide `max.connections` and
//!   `max.connections.per.ip`, checked at accept.
//! - `cleaner`: each shard's log cleaner task (compaction), paced.
//! - `clock`: the wall clock in Kafka's milliseconds.
//! - `alloc`: the process allocator (huge reservations are lazily mapped,
//!   so a hostile array length cannot abort the process).
//! - `fuzzing` (tests and the `fuzzing` feature only): a one-shard broker
//!   in process, on a fresh data dir, that the `handler` fuzz target drives
//!   with sequences of request frames.

// Nothing a request carries may reach a panic: no unwrap or expect, no
// unchecked index or slice, no arithmetic that can overflow, outside tests.
// Where an invariant makes one safe, a local `allow` says why.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects
    )
)]

pub mod alloc;
pub mod api;
pub mod cleaner;
pub mod clock;
pub mod cluster;
pub mod cluster_config;
pub mod cluster_publish;
pub mod cluster_upgrade;
pub mod config;
pub mod conn;
pub mod conn_limits;
pub mod coordinators;
pub mod frame_pool;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod group;
pub mod metadata;
pub mod placement;
pub mod producer_ids;
pub mod registry_cluster;
pub mod replica;
pub mod request_budget;
pub mod scatter;
pub mod server;
pub mod shard;
pub mod stages;
pub mod wire;
