//! Broker liveness on the active controller: heartbeats in, fence and
//! unfence records and the partition leadership that follows out.
//!
//! Rules (Kafka's `BrokerHeartbeatManager` and `ReplicationControlManager`,
//! for one replica per partition):
//! 1. A broker is alive while its last heartbeat, carrying its registered
//!    epoch, is younger than `broker.session.timeout.ms`. A controller that
//!    has just become active counts every registered broker as heard from
//!    at that moment (it was not there to hear them before), except the
//!    broker of the controller it replaces, which gets two heartbeat
//!    intervals: the election already waited out its silence
//!    (`node::heartbeat_and_fence`).
//! 2. An unfenced broker that is not alive is fenced.
//! 3. A fenced broker that is alive and has applied the metadata up to its
//!    own registration is caught up, and unfenced.
//! 5. Controlled shutdown (Kafka's `wantShutDown`): a broker whose latest
//!    heartbeat asks to shut down is fenced at once, in the same batch as
//!    the leadership moves of rule 4, and stays fenced while it keeps
//!    asking (until it stops; a restart registers a new incarnation).
//!    Kafka first moves leadership away from a broker in controlled
//!    shutdown and fences it when it leads nothing; with no follower
//!    fetching from it in between, one batch does both.
//! 4. Leader election (KRaft's): a fenced (or unregistered) broker leaves
//!    the ISR of every partition where an unfenced ISR member remains (the
//!    last members stay: they hold everything acknowledged). A partition
//!    whose leader is not usable gets the first ISR member, in replica
//!    order, that is registered and unfenced, at a new leader epoch; with
//!    none, leader -1, unless unclean election is on for the topic
//!    (`unclean_election`: its own `unclean.leader.election.enable`, else
//!    the cluster-wide dynamic broker default, else the controller's
//!    static config, as KRaft's controller resolves it): then the first unfenced
//!    replica leads with an ISR of itself. A returning broker does not
//!    take leadership back while another leads (the leader adds it back
//!    to the ISR through AlterPartition); it leads a leaderless partition
//!    whose ISR it is in.
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
    /// The broker asks for a controlled shutdown (rule 5).
    pub want_shutdown: bool,
    /// Its node refused a connection since: the process is gone, so the
    /// broker counts as not heard whatever its tick (rule 1).
    pub gone: bool,
}

/// The records that bring the image in line with rules 2-4 (empty when it
/// already is). Fence and unfence records come first, then the partition
/// changes, all in one batch.
pub fn reconcile(
    image: &ClusterImage,
    seen: &HashMap<i32, Seen>,
    now_tick: u64,
    session_ticks: u64,
    unclean_default: bool,
) -> Vec<Record> {
    let mut records = Vec::new();
    let mut usable = BTreeSet::new();
    for b in image.brokers.values() {
        let heard = seen.get(&b.broker_id).filter(|s| {
            !s.gone && s.broker_epoch == b.epoch && now_tick.saturating_sub(s.tick) < session_ticks
        });
        let caught_up =
            heard.is_some_and(|s| i64::try_from(s.applied_index).unwrap_or(i64::MAX) >= b.epoch);
        // Rule 5: a broker shutting down counts as gone.
        let heard = heard.filter(|s| !s.want_shutdown);
        let caught_up = caught_up && heard.is_some();
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
        let unclean = unclean_election(image, &topic.configs, unclean_default);
        for (p, state) in topic.partitions.iter().enumerate() {
            let (leader, isr) = elect(state, &usable, unclean);
            let leader_changed = leader != state.leader;
            let isr_changed = isr != state.isr;
            if leader_changed || isr_changed {
                records.push(Record::PartitionChange {
                    topic_id: topic.id,
                    partition: i32::try_from(p).unwrap_or(i32::MAX),
                    leader: leader_changed.then_some(leader),
                    isr: isr_changed.then_some(isr),
                    replicas: None,
                });
            }
        }
    }
    records
}

/// The key that allows electing a leader outside the ISR.
pub const UNCLEAN_KEY: &str = "unclean.leader.election.enable";

/// Whether a topic with `configs` allows unclean election: its own
/// setting, else the cluster-wide dynamic broker default (resource name
/// ""), else `static_default` (the controller's `unclean.leader.election.enable`).
pub fn unclean_election(
    image: &ClusterImage,
    configs: &std::collections::BTreeMap<String, String>,
    static_default: bool,
) -> bool {
    configs
        .get(UNCLEAN_KEY)
        .or_else(|| {
            image
                .broker_configs
                .get("")
                .and_then(|c| c.get(UNCLEAN_KEY))
        })
        .map_or(static_default, |v| v.trim().eq_ignore_ascii_case("true"))
}

/// Rule 4 for one partition: its (leader, ISR) given the usable brokers.
fn elect(
    state: &crate::image::PartitionState,
    usable: &BTreeSet<i32>,
    unclean: bool,
) -> (i32, Vec<i32>) {
    let mut isr: Vec<i32> = state
        .isr
        .iter()
        .copied()
        .filter(|b| usable.contains(b))
        .collect();
    if isr.is_empty() {
        // Nobody in the ISR can serve: Kafka keeps the ISR, so that the
        // replicas holding everything acknowledged are the ones waited for.
        isr = state.isr.clone();
    }
    if usable.contains(&state.leader) && isr.contains(&state.leader) {
        return (state.leader, isr);
    }
    let clean = state
        .replicas
        .iter()
        .copied()
        .find(|b| isr.contains(b) && usable.contains(b));
    if let Some(leader) = clean {
        return (leader, isr);
    }
    if unclean {
        if let Some(leader) = state.replicas.iter().copied().find(|b| usable.contains(b)) {
            return (leader, vec![leader]);
        }
    }
    (-1, isr)
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
            want_shutdown: false,
            gone: false,
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
        let r = reconcile(&image, &seen, 1, session, false);
        assert!(!r.iter().any(|r| matches!(r, Record::UnfenceBroker { .. })));
        image.apply_batch(4, &r).unwrap();
        assert_eq!((leader_of(&image, 0), leader_of(&image, 1)), (-1, -1));
        // Caught up: unfenced and leading again, at a new leader epoch.
        seen.insert(1, seen_at(1, 4, 2));
        seen.insert(2, seen_at(2, 4, 2));
        let r = reconcile(&image, &seen, 3, session, false);
        image.apply_batch(5, &r).unwrap();
        assert!(image.unfenced_brokers().count() == 2);
        assert_eq!((leader_of(&image, 0), leader_of(&image, 1)), (1, 2));
        assert_eq!(image.topics["t"].partitions[0].leader_epoch, 2);
        assert!(reconcile(&image, &seen, 4, session, false).is_empty());
        // Broker 2 falls silent past the session.
        seen.insert(1, seen_at(1, 5, 20));
        let r = reconcile(&image, &seen, 20, session, false);
        image.apply_batch(6, &r).unwrap();
        assert!(image.brokers[&2].fenced);
        assert_eq!((leader_of(&image, 0), leader_of(&image, 1)), (1, -1));
        // A heartbeat of an older incarnation does not count.
        register(&mut image, 7, 2);
        seen.insert(2, seen_at(2, 9, 21));
        assert!(reconcile(&image, &seen, 21, session, false).is_empty());
        seen.insert(2, seen_at(7, 7, 21));
        let r = reconcile(&image, &seen, 21, session, false);
        image.apply_batch(8, &r).unwrap();
        assert_eq!(leader_of(&image, 1), 2);
    }
}

#[cfg(test)]
mod election_tests {
    use super::*;
    use crate::image::PartitionState;

    fn state(replicas: &[i32], isr: &[i32], leader: i32) -> PartitionState {
        PartitionState {
            replicas: replicas.to_vec(),
            isr: isr.to_vec(),
            leader,
            leader_epoch: 3,
            partition_epoch: 5,
        }
    }

    fn usable(ids: &[i32]) -> BTreeSet<i32> {
        ids.iter().copied().collect()
    }

    #[test]
    fn a_fenced_leader_is_replaced_by_the_isr_in_replica_order() {
        let s = state(&[1, 2, 3], &[3, 1, 2], 1);
        assert_eq!(elect(&s, &usable(&[2, 3]), false), (2, vec![3, 2]));
        // A fenced follower only leaves the ISR.
        assert_eq!(elect(&s, &usable(&[1, 2]), false), (1, vec![1, 2]));
        // Nothing to do when all are up.
        assert_eq!(elect(&s, &usable(&[1, 2, 3]), false), (1, vec![3, 1, 2]));
    }

    #[test]
    fn the_last_isr_member_stays_and_unclean_election_is_opt_in() {
        let s = state(&[1, 2, 3], &[1], 1);
        assert_eq!(elect(&s, &usable(&[2, 3]), false), (-1, vec![1]));
        assert_eq!(elect(&s, &usable(&[2, 3]), true), (2, vec![2]));
        // The ISR member returns: it leads again.
        let s = state(&[1, 2, 3], &[1], -1);
        assert_eq!(elect(&s, &usable(&[1, 2, 3]), false), (1, vec![1]));
        // A returning broker out of the ISR does not take leadership back.
        let s = state(&[1, 2, 3], &[2, 3], 2);
        assert_eq!(elect(&s, &usable(&[1, 2, 3]), false), (2, vec![2, 3]));
    }

    #[test]
    fn reconcile_moves_leadership_at_a_new_epoch() {
        let mut image = ClusterImage::default();
        let id = uuid::Uuid::new_v4();
        let mut records = Vec::new();
        for b in 1..=3 {
            records.push(Record::RegisterBroker {
                broker_id: b,
                incarnation_id: uuid::Uuid::new_v4(),
                host: "h".into(),
                port: 9092,
                rack: None,
                fenced: false,
            });
        }
        image.apply_batch(1, &records).unwrap();
        let topic = [
            Record::Topic {
                name: "t".into(),
                topic_id: id,
            },
            Record::Partition {
                topic_id: id,
                partition: 0,
                replicas: vec![1, 2, 3],
                isr: vec![1, 2, 3],
                leader: 1,
                leader_epoch: 0,
                partition_epoch: 0,
            },
        ];
        image.apply_batch(2, &topic).unwrap();
        let seen: HashMap<i32, Seen> = [2, 3]
            .into_iter()
            .map(|b| {
                let s = Seen {
                    broker_epoch: 1,
                    applied_index: 2,
                    tick: 10,
                    want_shutdown: false,
                    gone: false,
                };
                (b, s)
            })
            .collect();
        let r = reconcile(&image, &seen, 11, 5, false);
        image.apply_batch(3, &r).unwrap();
        let p = &image.topics["t"].partitions[0];
        assert!(image.brokers[&1].fenced);
        assert_eq!(
            (p.leader, p.leader_epoch, p.isr.clone()),
            (2, 1, vec![2, 3])
        );
        assert_eq!(p.partition_epoch, 1);
        assert!(reconcile(&image, &seen, 12, 5, false).is_empty());
    }
}

/// A new incarnation of broker `id`, for tests.
#[cfg(test)]
fn registration(id: i32, fenced: bool) -> Record {
    Record::RegisterBroker {
        broker_id: id,
        incarnation_id: uuid::Uuid::new_v4(),
        host: "h".into(),
        port: 9092,
        rack: None,
        fenced,
    }
}

#[cfg(test)]
mod alter_partition_tests {
    use super::*;
    use crate::image::{AlterPartitionError, ApplyError};

    #[test]
    fn alter_partition_applies_only_at_the_expected_epochs() {
        let mut image = ClusterImage::default();
        let id = uuid::Uuid::new_v4();
        let mut records: Vec<Record> = (1..=3).map(|b| registration(b, b == 3)).collect();
        records.push(Record::Topic {
            name: "t".into(),
            topic_id: id,
        });
        records.push(Record::Partition {
            topic_id: id,
            partition: 0,
            replicas: vec![1, 2, 3],
            isr: vec![1, 2],
            leader: 1,
            leader_epoch: 4,
            partition_epoch: 7,
        });
        image.apply_batch(1, &records).unwrap();
        let alter = |leader, le, pe, isr: &[i32]| Record::AlterPartition {
            topic_id: id,
            partition: 0,
            leader,
            leader_epoch: le,
            partition_epoch: pe,
            isr: isr.to_vec(),
        };
        let reason = |r: Result<(), ApplyError>| match r {
            Err(ApplyError::AlterPartition { reason, .. }) => Some(reason),
            _ => None,
        };
        let mut index = 2;
        let mut apply = |image: &mut ClusterImage, r: Record| {
            index += 1;
            image.apply_batch(index, &[r])
        };
        assert_eq!(
            reason(apply(&mut image, alter(2, 4, 7, &[2]))),
            Some(AlterPartitionError::FencedLeaderEpoch)
        );
        assert_eq!(
            reason(apply(&mut image, alter(1, 3, 7, &[1]))),
            Some(AlterPartitionError::FencedLeaderEpoch)
        );
        assert_eq!(
            reason(apply(&mut image, alter(1, 4, 6, &[1]))),
            Some(AlterPartitionError::InvalidUpdateVersion)
        );
        // Broker 3 is fenced: it cannot be added.
        assert_eq!(
            reason(apply(&mut image, alter(1, 4, 7, &[1, 2, 3]))),
            Some(AlterPartitionError::IneligibleReplica(3))
        );
        assert_eq!(
            reason(apply(&mut image, alter(1, 4, 7, &[1, 9]))),
            Some(AlterPartitionError::IneligibleReplica(9))
        );
        // A shrink applies and bumps the partition epoch only.
        apply(&mut image, alter(1, 4, 7, &[1])).unwrap();
        let p = &image.topics["t"].partitions[0];
        assert_eq!(
            (p.isr.clone(), p.leader_epoch, p.partition_epoch),
            (vec![1], 4, 8)
        );
        // The stale epoch is now refused; the new one expands.
        assert!(reason(apply(&mut image, alter(1, 4, 7, &[1, 2]))).is_some());
        apply(&mut image, alter(1, 4, 8, &[1, 2])).unwrap();
        assert_eq!(image.topics["t"].partitions[0].isr, vec![1, 2]);
        assert_eq!(AlterPartitionError::IneligibleReplica(3).code(), 107);
    }
}

#[cfg(test)]
mod controlled_shutdown_tests {
    use super::*;

    fn seen(want_shutdown: bool) -> Seen {
        Seen {
            broker_epoch: 1,
            applied_index: 5,
            tick: 10,
            want_shutdown,
            gone: false,
        }
    }

    /// Rule 1: a broker whose node refused a connection (its process is
    /// gone) is fenced within its session, and a heartbeat from it (a new
    /// `Seen`) counts again.
    #[test]
    fn a_gone_broker_is_fenced_within_its_session() {
        let mut image = ClusterImage::default();
        let records: Vec<Record> = (1..=2).map(|b| registration(b, false)).collect();
        image.apply_batch(1, &records).unwrap();
        let mut heard: HashMap<i32, Seen> = (1..=2).map(|b| (b, seen(false))).collect();
        assert!(reconcile(&image, &heard, 11, 100, false).is_empty());
        heard.insert(
            2,
            Seen {
                gone: true,
                ..seen(false)
            },
        );
        assert_eq!(
            reconcile(&image, &heard, 11, 100, false),
            vec![Record::FenceBroker {
                broker_id: 2,
                epoch: image.brokers[&2].epoch
            }]
        );
        heard.insert(2, seen(false));
        assert!(reconcile(&image, &heard, 11, 100, false).is_empty());
    }

    /// Rule 5: a broker asking to shut down is fenced at once (no session
    /// timeout), its leaderships move to another ISR member in the same
    /// batch, a partition it alone holds has no leader, and it is not
    /// unfenced while it keeps asking; its next incarnation is.
    #[test]
    fn a_broker_shutting_down_is_fenced_and_its_leadership_moves() {
        let mut image = ClusterImage::default();
        let id = uuid::Uuid::new_v4();
        let mut records: Vec<Record> = (1..=3).map(|b| registration(b, false)).collect();
        records.push(Record::Topic {
            name: "t".into(),
            topic_id: id,
        });
        let partition = |p, replicas: &[i32], leader| Record::Partition {
            topic_id: id,
            partition: p,
            replicas: replicas.to_vec(),
            isr: replicas.to_vec(),
            leader,
            leader_epoch: 2,
            partition_epoch: 3,
        };
        records.push(partition(0, &[1, 2, 3], 1));
        records.push(partition(1, &[1], 1));
        records.push(partition(2, &[2, 1], 2));
        image.apply_batch(1, &records).unwrap();
        let mut heard: HashMap<i32, Seen> = (1..=3).map(|b| (b, seen(false))).collect();
        assert!(reconcile(&image, &heard, 11, 100, false).is_empty());

        heard.insert(1, seen(true));
        let r = reconcile(&image, &heard, 11, 100, false);
        assert_eq!(
            r.first(),
            Some(&Record::FenceBroker {
                broker_id: 1,
                epoch: 1
            })
        );
        image.apply_batch(2, &r).unwrap();
        let p = &image.topics["t"].partitions;
        assert!(image.brokers[&1].fenced);
        assert_eq!(
            (p[0].leader, p[0].leader_epoch, p[0].isr.clone()),
            (2, 3, vec![2, 3])
        );
        // The only replica keeps the ISR, with no leader (no unclean election).
        assert_eq!((p[1].leader, p[1].isr.clone()), (-1, vec![1]));
        // A follower only leaves the ISR; the leader stays.
        assert_eq!(
            (p[2].leader, p[2].leader_epoch, p[2].isr.clone()),
            (2, 2, vec![2])
        );

        // Still asking, caught up and heard within the session: stays fenced.
        assert!(reconcile(&image, &heard, 12, 100, false).is_empty());
        // Its next incarnation (a new registration) is unfenced once caught up.
        image.apply_batch(3, &[registration(1, true)]).unwrap();
        let mut next = seen(false);
        next.broker_epoch = 3;
        heard.insert(1, next);
        let r = reconcile(&image, &heard, 13, 100, false);
        image.apply_batch(4, &r).unwrap();
        assert!(!image.brokers[&1].fenced);
        assert_eq!(image.topics["t"].partitions[1].leader, 1);
    }
}

#[cfg(test)]
mod unclean_default_tests {
    use super::*;

    /// Broker-level `unclean.leader.election.enable`: the topic's own
    /// setting wins, then the cluster-wide dynamic default, then the
    /// controller's static config.
    #[test]
    fn the_broker_level_default_counts_when_the_topic_has_none() {
        let mut image = ClusterImage::default();
        let id = uuid::Uuid::new_v4();
        let other = uuid::Uuid::new_v4();
        let mut records: Vec<Record> = (1..=2).map(|b| registration(b, false)).collect();
        for (name, topic_id) in [("t", id), ("strict", other)] {
            records.push(Record::Topic {
                name: name.into(),
                topic_id,
            });
            records.push(Record::Partition {
                topic_id,
                partition: 0,
                replicas: vec![1, 2],
                isr: vec![1],
                leader: 1,
                leader_epoch: 0,
                partition_epoch: 0,
            });
        }
        records.push(Record::Config {
            resource: crate::records::ConfigResource::Topic,
            resource_name: "strict".into(),
            name: UNCLEAN_KEY.into(),
            value: Some("false".into()),
        });
        image.apply_batch(1, &records).unwrap();
        // Broker 1 is silent: only broker 2 is heard.
        let heard: HashMap<i32, Seen> = [(
            2,
            Seen {
                broker_epoch: 1,
                applied_index: 1,
                tick: 10,
                want_shutdown: false,
                gone: false,
            },
        )]
        .into();
        let leaders = |image: &ClusterImage, unclean_default| {
            let mut image = image.clone();
            let r = reconcile(&image, &heard, 11, 5, unclean_default);
            let next = image.applied_index + 1;
            image.apply_batch(next, &r).unwrap();
            let t = &image.topics;
            (
                t["t"].partitions[0].leader,
                t["strict"].partitions[0].leader,
            )
        };
        assert_eq!(leaders(&image, false), (-1, -1));
        // The static default moves `t`; `strict` says no itself.
        assert_eq!(leaders(&image, true), (2, -1));
        // A cluster-wide dynamic default overrides the static one.
        let dynamic = |v: &str| Record::Config {
            resource: crate::records::ConfigResource::Broker,
            resource_name: String::new(),
            name: UNCLEAN_KEY.into(),
            value: Some(v.into()),
        };
        let mut on = image.clone();
        on.apply_batch(2, &[dynamic("true")]).unwrap();
        assert_eq!(leaders(&on, false), (2, -1));
        let mut off = image.clone();
        off.apply_batch(2, &[dynamic("false")]).unwrap();
        assert_eq!(leaders(&off, true), (-1, -1));
    }
}
