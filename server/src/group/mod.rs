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
//!   OffsetCommitKey v1 / OffsetCommitValue v3, GroupMetadataKey v2 /
//!   GroupMetadataValue v3) and RecordBatch framing.
//! - `stored`: group metadata records: appended when a rebalance completes
//!   (before SyncGroup is answered) or the group becomes empty, and applied
//!   at replay, so a new coordinator knows the members.
//! - `find_coordinator`: FindCoordinator, which needs no group state.
//! - `placement`: a group's `__consumer_offsets` partition
//!   ([`offsets_partition_for`], Kafka's hash).
//! - `config`: what a coordinator is given ([`GroupConfig`], the broker's
//!   [`TopicLookup`], the [`Clock`]) and who sent a request ([`ClientInfo`]).
//! - `codes`: Kafka's error codes used here.
//!
//! Apart from `SUPPORTED_VERSIONS`, this file only declares the modules and
//! re-exports their public items, so no module here imports one that
//! imports it back.
//!
//! Coordinator logic only: nothing here knows about shards, connections or
//! the wire. `crate::coordinators` starts each shard's coordinator over its
//! `__consumer_offsets` partitions; `crate::api::groups` decodes group
//! requests and runs them there.
//!
//! Data flow: the broker routes a group request to the shard owning the
//! group's `__consumer_offsets` partition ([`offsets_partition_for`]); that
//! shard's coordinator answers it. Commits are appended to that partition's
//! log with `Durability::Synced` (and in a cluster replicated to its
//! in-sync replicas) before the answer. A coordinator answers per
//! partition: on one node it replays every owned partition at start; in a
//! cluster it replays a partition when this node is elected its leader
//! (COORDINATOR_LOAD_IN_PROGRESS until then) and forgets its groups when
//! the leadership moves (NOT_COORDINATOR).

pub mod codes;
mod config;
mod coordinator;
mod find_coordinator;
mod join;
mod offsets;
mod placement;
pub mod records;
mod state;
mod stored;

#[cfg(test)]
mod tests;

pub use config::{system_clock, ClientInfo, Clock, GroupConfig, ReplicatedWait, TopicLookup};
pub use coordinator::GroupCoordinator;
pub use find_coordinator::{find_coordinator, find_coordinator_with, CoordinatorNode};
pub use placement::{java_string_hash, offsets_partition_for, OFFSETS_TOPIC};
pub use state::GroupState;

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
