//! Where a new partition's replicas go, in a cluster and on one node.
//!
//! - [`assign`] is Kafka's rack-unaware assignment
//!   (`AdminUtils.assignReplicasToBrokersRackUnaware`): the first replica of
//!   partition `p` is broker `(p + start) % n`; the others follow it at a
//!   shift that grows by one every `n` partitions, so leaders and followers
//!   both spread over the brokers. Kafka draws `start` and the shift at
//!   random; here they come from the topic's name, so a topic's placement
//!   is reproducible and CreatePartitions continues the same pattern.
//! - [`plan`] checks a requested replication (a factor, or a manual
//!   assignment) against the brokers the metadata has, with Kafka's errors
//!   and messages, and gives the replicas of each new partition.
//! - [`partition_record`] turns one partition's replicas into its record:
//!   the ISR is the replicas that are unfenced, the leader the first of them.

use kafka_protocol::ResponseError;
use strom_controller::{ClusterImage, Record};
use uuid::Uuid;

use crate::metadata::Metadata;

/// (error code, message), as the admin APIs answer.
pub type PlanError = (i16, String);

/// The replication a request asks of its new partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replication {
    /// Exactly this many replicas (INVALID_REPLICATION_FACTOR when there
    /// are not that many unfenced brokers).
    Factor(i32),
    /// As many as this, or as many unfenced brokers as there are: the
    /// internal topics' `offsets.topic.replication.factor` and `_schemas`,
    /// so that a cluster of one or two nodes still works.
    AtMost(i32),
    /// The replicas of each new partition, in order.
    Manual(Vec<Vec<i32>>),
}

/// The brokers a plan may use: (registered, unfenced), in id order. On one
/// node: this node alone.
fn brokers(m: &Metadata, node_id: i32) -> (Vec<i32>, Vec<i32>) {
    match m.cluster.as_ref() {
        Some(image) => (
            image.brokers.keys().copied().collect(),
            image.unfenced_brokers().map(|b| b.broker_id).collect(),
        ),
        None => (vec![node_id], vec![node_id]),
    }
}

fn invalid_factor(msg: String) -> PlanError {
    (ResponseError::InvalidReplicationFactor.code(), msg)
}

fn invalid_assignment(msg: String) -> PlanError {
    (ResponseError::InvalidReplicaAssignment.code(), msg)
}

/// The replicas of partitions `first..first + count` of `topic`, checked
/// against the brokers `m` knows (this node alone on one node).
pub fn plan(
    m: &Metadata,
    node_id: i32,
    topic: &str,
    first: i32,
    count: i32,
    replication: &Replication,
) -> Result<Vec<Vec<i32>>, PlanError> {
    let (registered, unfenced) = brokers(m, node_id);
    let factor = match replication {
        Replication::Manual(assignment) => {
            check_manual(assignment, &registered, &unfenced)?;
            return Ok(assignment.clone());
        }
        Replication::Factor(rf) => *rf,
        Replication::AtMost(rf) => {
            (*rf).min(i32::try_from(unfenced.len()).unwrap_or(i32::MAX).max(1))
        }
    };
    if factor < 1 {
        return Err(invalid_factor(
            "Replication factor must be larger than 0, or -1 to use the default value.".into(),
        ));
    }
    let rf = usize::try_from(factor).unwrap_or(usize::MAX);
    if unfenced.is_empty() {
        return Err(invalid_factor("All brokers are currently fenced.".into()));
    }
    if rf > unfenced.len() {
        return Err(invalid_factor(format!(
            "Unable to replicate the partition {factor} time(s): The target replication factor of \
             {factor} cannot be reached because only {} broker(s) are registered and unfenced.",
            unfenced.len()
        )));
    }
    Ok(assign(topic, first, count, rf, &unfenced))
}

/// Kafka's checks of a manual assignment (`ReplicationControlManager.
/// validateManualPartitionAssignment`), plus: some replica of every
/// partition must be unfenced, or it could have no leader.
fn check_manual(
    assignment: &[Vec<i32>],
    registered: &[i32],
    unfenced: &[i32],
) -> Result<(), PlanError> {
    let mut expected_len = None;
    for (p, replicas) in assignment.iter().enumerate() {
        if replicas.is_empty() {
            return Err(invalid_assignment(
                "The manual partition assignment includes an empty replica list.".into(),
            ));
        }
        for (i, b) in replicas.iter().enumerate() {
            if replicas.get(..i).is_some_and(|before| before.contains(b)) {
                return Err(invalid_assignment(format!(
                    "The manual partition assignment includes the broker {b} more than once."
                )));
            }
            if !registered.contains(b) {
                return Err(invalid_assignment(format!(
                    "The manual partition assignment includes broker {b}, but no such broker is registered."
                )));
            }
        }
        match expected_len {
            Some(n) if n != replicas.len() => {
                return Err(invalid_assignment(format!(
                    "The manual partition assignment includes a partition with {} replica(s), but \
                     this is not consistent with previous partitions, which have {n} replica(s).",
                    replicas.len()
                )))
            }
            _ => expected_len = Some(replicas.len()),
        }
        if !replicas.iter().any(|b| unfenced.contains(b)) {
            return Err(invalid_assignment(format!(
                "All brokers specified in the manual partition assignment for partition {p} are \
                 fenced or in controlled shutdown."
            )));
        }
    }
    Ok(())
}

/// Kafka's rack-unaware assignment of `rf` replicas to each of partitions
/// `first..first + count` over `brokers` (`rf <= brokers.len()`).
pub fn assign(topic: &str, first: i32, count: i32, rf: usize, brokers: &[i32]) -> Vec<Vec<i32>> {
    let n = brokers.len();
    if n == 0 {
        return Vec::new();
    }
    let hash = crc32c::crc32c(topic.as_bytes()) as usize;
    // `n > 0` here; `checked_*` only keeps the arithmetic lint honest.
    let rem = |x: usize, m: usize| x.checked_rem(m).unwrap_or(0);
    let start = rem(hash, n);
    let base_shift = rem(hash >> 16, n);
    let others = n.saturating_sub(1);
    (first.max(0)..first.max(0).saturating_add(count.max(0)))
        .map(|p| {
            let p = usize::try_from(p).unwrap_or(0);
            // Kafka bumps the shift each time the partitions wrap around
            // the brokers.
            let shift = base_shift.wrapping_add(p.checked_div(n).unwrap_or(0));
            let first_index = rem(p.wrapping_add(start), n);
            let mut replicas = Vec::with_capacity(rf);
            replicas.extend(brokers.get(first_index));
            for j in 0..rf.saturating_sub(1).min(others) {
                // 1 + (shift + j) % (n - 1): never 0, so never the first.
                let step = 1usize.wrapping_add(rem(shift.wrapping_add(j), others));
                replicas.extend(brokers.get(rem(first_index.wrapping_add(step), n)));
            }
            replicas
        })
        .collect()
}

/// The record of a new partition with these replicas: the leader is the
/// first replica that is registered and unfenced (-1 when none is: it is
/// elected when one comes back), and the ISR is every such replica, as in
/// Kafka: their logs are all empty, so each holds everything committed, and
/// acks=all waits for every one of them from the first record. (The ISR was
/// the leader alone, from before followers fetched: a new topic's records
/// were acknowledged by its leader alone, and under a steady load the
/// followers never caught up to join, so the topic ran at RF=1.)
pub fn partition_record(
    image: &ClusterImage,
    topic_id: Uuid,
    partition: i32,
    replicas: Vec<i32>,
) -> Record {
    let live = |b: &i32| image.brokers.get(b).is_some_and(|r| !r.fenced);
    let leader = replicas.iter().copied().find(live).unwrap_or(-1);
    let isr = if leader == -1 {
        // Nobody can lead yet; the ISR keeps every replica, so the first
        // to return is elected (fencing rule 4).
        replicas.clone()
    } else {
        replicas.iter().copied().filter(live).collect()
    };
    Record::Partition {
        topic_id,
        partition,
        replicas,
        isr,
        leader,
        leader_epoch: 0,
        partition_epoch: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn replicas_spread_like_kafkas() {
        let brokers = [1, 2, 3];
        let a = assign("t", 0, 12, 3, &brokers);
        assert_eq!(a.len(), 12);
        for r in &a {
            assert_eq!(r.iter().collect::<BTreeSet<_>>().len(), 3, "{r:?}");
        }
        // Leaders spread evenly, and so do the second replicas.
        for slot in 0..2 {
            let mut counts = [0; 3];
            for r in &a {
                counts[(r[slot] - 1) as usize] += 1;
            }
            assert_eq!(counts, [4, 4, 4], "slot {slot}");
        }
        // CreatePartitions continues the same pattern.
        assert_eq!(assign("t", 5, 7, 3, &brokers), a[5..].to_vec());
        assert_eq!(assign("t", 0, 1, 1, &[7]), vec![vec![7]]);
        assert!(assign("t", 0, 3, 1, &[]).is_empty());
    }

    #[test]
    fn manual_assignments_are_checked() {
        let registered = [1, 2, 3];
        let unfenced = [1, 2];
        let code = |a: &[Vec<i32>]| check_manual(a, &registered, &unfenced).map_err(|e| e.0);
        let bad = Err(ResponseError::InvalidReplicaAssignment.code());
        assert_eq!(code(&[vec![1, 2], vec![3, 1]]), Ok(()));
        assert_eq!(code(&[vec![1, 1]]), bad);
        assert_eq!(code(&[vec![1, 9]]), bad);
        assert_eq!(code(&[vec![1, 2], vec![3]]), bad);
        assert_eq!(code(&[vec![]]), bad);
        assert_eq!(code(&[vec![3]]), bad);
    }
}
