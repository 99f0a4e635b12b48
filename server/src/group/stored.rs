//! Group metadata in `__consumer_offsets` (Kafka's GroupMetadata records):
//! what a completed rebalance left (generation, protocol, leader, every
//! member with its subscription and assignment) is appended before the
//! members are answered, and a partition's replay rebuilds the groups from
//! it. So when the leadership of a group's partition moves (a controlled
//! shutdown, a crash, a rolling restart), the new coordinator knows the
//! members: their heartbeats and commits go on at the same generation,
//! where without it every member would be told UNKNOWN_MEMBER_ID, lose its
//! partitions and have its commit refused.

use bytes::Bytes;

use super::codes::NONE;
use super::coordinator::GroupCoordinator;
use super::records;
use super::state::{Group, GroupState, SyncOutcome};

impl GroupCoordinator {
    /// Appends the leader's assignment of `generation` (already set on the
    /// members, who are parked in SyncGroup), then, if the group is still
    /// completing that rebalance, answers every member and makes the group
    /// Stable; if the append failed, answers them the error and starts a
    /// new rebalance (Kafka's doSyncGroup).
    pub(super) async fn store_assignment(&self, group_id: &str, generation: i32, value: Vec<u8>) {
        let now = self.now();
        let record = (records::encode_group_key(group_id), Some(value));
        let stored = self.append(group_id, &[record], now).await;
        let now = self.now();
        let mut groups = self.inner.groups.borrow_mut();
        let Some(group) = groups.get_mut(group_id) else {
            return;
        };
        if group.state != GroupState::CompletingRebalance || group.generation != generation {
            return;
        }
        match stored {
            Ok(_) => {
                let protocol_type = group.protocol_type.clone();
                let protocol_name = group.protocol_name.clone();
                for m in group.members.values_mut() {
                    let outcome = SyncOutcome {
                        error: NONE,
                        protocol_type: protocol_type.clone(),
                        protocol_name: protocol_name.clone(),
                        assignment: m.assignment.clone(),
                    };
                    m.answer_sync(outcome);
                }
                group.transition(GroupState::Stable, now);
                tracing::info!(group = %group.id, generation, "group stable");
            }
            Err(e) => {
                tracing::warn!(group = %group.id, generation, error = e, "storing the assignment failed");
                for m in group.members.values_mut() {
                    m.assignment = Bytes::new();
                    m.answer_sync(SyncOutcome::error(e));
                }
                self.prepare_rebalance(group, now);
            }
        }
    }

    /// Appends an empty group's metadata (its generation, no members) on a
    /// task of its own: the group became empty inside a synchronous step.
    /// If the append fails, the next coordinator loads the members of the
    /// last completed rebalance, and drops them when their sessions end.
    pub(super) fn store_empty_later(&self, group: &Group, now: i64) {
        let id = group.id.clone();
        let value = records::encode_group_value(&group.to_value(now));
        let coordinator = self.clone();
        glommio::spawn_local(async move {
            let record = (records::encode_group_key(&id), Some(value));
            if let Err(e) = coordinator.append(&id, &[record], now).await {
                tracing::warn!(group = %id, error = e, "storing the empty group failed");
            }
        })
        .detach();
    }
}
