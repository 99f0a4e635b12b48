//! Broker liveness on the active controller: heartbeats in, fence and
//! unfence records and the partition leadership that follows out.
//!
//! Rules (Kafka's `BrokerHeartbeatManager` and `ReplicationControlManager`,
//! for one replica per partition):
//! 1. A broker is alive while its last heartbeat, carrying its registered
//!    epoch, is younger than `broker.session.timeout.ms`. A controller that
//!    has just become active counts every registered broker as heard from
//!    at that moment (it was not there to hear them before).
//! 2. An unfenced broker that is not alive is fenced.
//! 3. A fenced broker that is alive and has applied the metadata up to its
//!    own registration is caught up, and unfenced.
//! 4. A partition led by a fenced (or unregistered) broker loses its
//!    leader (-1); a partition without a leader gets the first ISR member
//!    that is registered and unfenced. The ISR is kept: with one replica
//!    there is nobody else to hold the data.
//!
//! `reconcile` is a pure function of the image, the heartbeats and the
//! clock, so the node that proposes its records needs no other state.

use std::collections::{BTreeSet, HashMap};

use crate::image::ClusterImage;
use crate::records::Record;

/// The last heartbeat the active controller has from a broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub broker_epoch: i64,
    pub applied_index: u64,
    /// The controller's tick it arrived at.
    pub tick: u64,
}

/// The records that bring the image in line with rules 2-4 (empty when it
/// already is). Fence and unfence records come first, then the partition
/// changes, all in one batch.
pub fn reconcile(
    image: &ClusterImage,
    seen: &HashMap<i32, Seen>,
    now_tick: u64,
    session_ticks: u64,
) -> Vec<Record> {
    let mut records = Vec::new();
    let mut usable = BTreeSet::new();
    for b in image.brokers.values() {
        let heard = seen.get(&b.broker_id).filter(|s| {
            s.broker_epoch == b.epoch && now_tick.saturating_sub(s.tick) < session_ticks
        });
        let caught_up =
            heard.is_some_and(|s| i64::try_from(s.applied_index).unwrap_or(i64::MAX) >= b.epoch);
        let fenced = match (b.fenced, heard.is_some(), caught_up) {
            (false, false, _) => {
                records.push(Record::FenceBroker {
                    broker_id: b.broker_id,
                    epoch: b.epoch,
                });
                true
            }
            (true, _, true) => {
                records.push(Record::UnfenceBroker {
                    broker_id: b.broker_id,
                    epoch: b.epoch,
                });
                false
            }
            (fenced, _, _) => fenced,
        };
        if !fenced {
            usable.insert(b.broker_id);
        }
    }
    for topic in image.topics.values() {
        for (p, state) in topic.partitions.iter().enumerate() {
            let leader = if state.leader != -1 && !usable.contains(&state.leader) {
                -1
            } else if state.leader == -1 {
                state
                    .isr
                    .iter()
                    .copied()
                    .find(|b| usable.contains(b))
                    .unwrap_or(-1)
            } else {
                state.leader
            };
            if leader != state.leader {
                records.push(Record::PartitionChange {
                    topic_id: topic.id,
                    partition: i32::try_from(p).unwrap_or(i32::MAX),
                    leader: Some(leader),
                    isr: None,
                    replicas: None,
                });
            }
        }
    }
    records
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn register(image: &mut ClusterImage, index: u64, id: i32) {
        let r = Record::RegisterBroker {
            broker_id: id,
            incarnation_id: Uuid::new_v4(),
            host: "h".into(),
            port: 9092,
            rack: None,
            fenced: true,
        };
        image.apply_batch(index, &[r]).unwrap();
    }

    fn leader_of(image: &ClusterImage, p: usize) -> i32 {
        image.topics["t"].partitions[p].leader
    }

    /// A broker is unfenced once caught up, its partition led; silent past
    /// the session it is fenced and the partition has no leader; a new
    /// incarnation leads it again once caught up.
    fn seen_at(broker_epoch: i64, applied_index: u64, tick: u64) -> Seen {
        Seen {
            broker_epoch,
            applied_index,
            tick,
        }
    }

    #[test]
    fn fence_unfence_and_leadership() {
        let mut image = ClusterImage::default();
        register(&mut image, 1, 1);
        register(&mut image, 2, 2);
        let id = Uuid::new_v4();
        image
            .apply_batch(
                3,
                &[
                    Record::Topic {
                        name: "t".into(),
                        topic_id: id,
                    },
                    Record::single_replica_partition(id, 0, 1),
                    Record::single_replica_partition(id, 1, 2),
                ],
            )
            .unwrap();
        let session = 10;
        let mut seen = HashMap::new();
        // Broker 1 has not caught up with its registration (index 1): fenced
        // stays fenced; partitions of fenced brokers lose their leaders.
        seen.insert(1, seen_at(1, 0, 0));
        let r = reconcile(&image, &seen, 1, session);
        assert!(!r.iter().any(|r| matches!(r, Record::UnfenceBroker { .. })));
        image.apply_batch(4, &r).unwrap();
        assert_eq!((leader_of(&image, 0), leader_of(&image, 1)), (-1, -1));
        // Caught up: unfenced and leading again, at a new leader epoch.
        seen.insert(1, seen_at(1, 4, 2));
        seen.insert(2, seen_at(2, 4, 2));
        let r = reconcile(&image, &seen, 3, session);
        image.apply_batch(5, &r).unwrap();
        assert!(image.unfenced_brokers().count() == 2);
        assert_eq!((leader_of(&image, 0), leader_of(&image, 1)), (1, 2));
        assert_eq!(image.topics["t"].partitions[0].leader_epoch, 2);
        assert!(reconcile(&image, &seen, 4, session).is_empty());
        // Broker 2 falls silent past the session.
        seen.insert(1, seen_at(1, 5, 20));
        let r = reconcile(&image, &seen, 20, session);
        image.apply_batch(6, &r).unwrap();
        assert!(image.brokers[&2].fenced);
        assert_eq!((leader_of(&image, 0), leader_of(&image, 1)), (1, -1));
        // A heartbeat of an older incarnation does not count.
        register(&mut image, 7, 2);
        seen.insert(2, seen_at(2, 9, 21));
        assert!(reconcile(&image, &seen, 21, session).is_empty());
        seen.insert(2, seen_at(7, 7, 21));
        let r = reconcile(&image, &seen, 21, session);
        image.apply_batch(8, &r).unwrap();
        assert_eq!(leader_of(&image, 1), 2);
    }
}
