//! The apply rules of `image.rs`, one test per rule.

use super::*;

fn topic(name: &str, id: Uuid) -> Record {
    Record::Topic {
        name: name.into(),
        topic_id: id,
    }
}

fn partition(id: Uuid, p: i32, replicas: &[i32], leader: i32) -> Record {
    Record::Partition {
        topic_id: id,
        partition: p,
        replicas: replicas.to_vec(),
        isr: replicas.to_vec(),
        leader,
        leader_epoch: 0,
        partition_epoch: 0,
    }
}

fn register(broker_id: i32) -> Record {
    Record::RegisterBroker {
        broker_id,
        incarnation_id: Uuid::new_v4(),
        host: "127.0.0.1".into(),
        port: 9092,
        rack: None,
        fenced: true,
    }
}

/// An image with topic `t` (id returned) of two partitions led by 1 and 2.
fn with_topic() -> (ClusterImage, Uuid) {
    let mut image = ClusterImage::default();
    let id = Uuid::new_v4();
    image
        .apply_batch(
            1,
            &[
                topic("t", id),
                partition(id, 0, &[1, 2], 1),
                partition(id, 1, &[2, 3], 2),
            ],
        )
        .unwrap();
    (image, id)
}

#[test]
fn a_batch_applies_whole_or_not_at_all() {
    let (mut image, id) = with_topic();
    let before = image.clone();
    // The second topic is fine, the partition after it is not: neither applies.
    let other = Uuid::new_v4();
    let err = image
        .apply_batch(2, &[topic("u", other), partition(id, 5, &[1], 1)])
        .unwrap_err();
    assert!(matches!(err, ApplyError::BadPartition { partition: 5, .. }));
    assert!(!image.topics.contains_key("u"));
    assert_eq!(image.applied_index, 2, "a rejected entry is still applied");
    image.applied_index = before.applied_index;
    assert_eq!(image, before);
    // A removal, a re-creation and a config, then a bad record: all undone.
    let again = Uuid::new_v4();
    let config = Record::Config {
        resource: ConfigResource::Topic,
        resource_name: "t".into(),
        name: "retention.ms".into(),
        value: Some("1".into()),
    };
    assert!(image
        .apply_batch(
            3,
            &[
                Record::RemoveTopic { topic_id: id },
                topic("t", again),
                config,
                partition(again, 1, &[1], 1),
            ],
        )
        .is_err());
    image.applied_index = before.applied_index;
    assert_eq!(image, before);
    assert_eq!(image.topic_by_id(id).map(|t| t.name.as_str()), Some("t"));
    assert!(image.topic_by_id(again).is_none());
}

#[test]
fn cluster_id_is_set_once() {
    let mut image = ClusterImage::default();
    let set = |id: &str| Record::ClusterId {
        cluster_id: id.into(),
    };
    image.apply_batch(1, &[set("a")]).unwrap();
    assert_eq!(
        image.apply_batch(2, &[set("b")]),
        Err(ApplyError::ClusterIdSet)
    );
    assert_eq!(image.cluster_id.as_deref(), Some("a"));
}

#[test]
fn topic_names_and_ids_are_unique() {
    let (mut image, id) = with_topic();
    assert_eq!(
        image.apply_batch(2, &[topic("t", Uuid::new_v4())]),
        Err(ApplyError::TopicExists("t".into()))
    );
    assert_eq!(
        image.apply_batch(3, &[topic("v", id)]),
        Err(ApplyError::TopicIdExists(id))
    );
}

#[test]
fn partitions_are_dense_and_well_formed() {
    let (mut image, id) = with_topic();
    let reject = |image: &mut ClusterImage, r: Record| {
        let index = image.applied_index + 1;
        assert!(
            matches!(
                image.apply_batch(index, &[r]),
                Err(ApplyError::BadPartition { .. })
            ),
            "accepted a bad partition"
        );
    };
    reject(&mut image, partition(id, 3, &[1], 1)); // a gap
    reject(&mut image, partition(id, 1, &[1], 1)); // exists
    reject(&mut image, partition(id, 2, &[], -1)); // no replica
    reject(&mut image, partition(id, 2, &[1, 1], 1)); // twice
    reject(&mut image, partition(id, 2, &[1, 2], 3)); // leader not in ISR
    reject(
        &mut image,
        Record::Partition {
            topic_id: id,
            partition: 2,
            replicas: vec![1],
            isr: vec![2],
            leader: -1,
            leader_epoch: 0,
            partition_epoch: 0,
        },
    ); // ISR outside the replicas
    let index = image.applied_index + 1;
    image
        .apply_batch(index, &[partition(id, 2, &[3], -1)])
        .unwrap();
    assert_eq!(image.topics["t"].partitions.len(), 3);
    let unknown = Uuid::new_v4();
    let index = image.applied_index + 1;
    assert_eq!(
        image.apply_batch(index, &[partition(unknown, 0, &[1], 1)]),
        Err(ApplyError::UnknownTopicId(unknown))
    );
}

#[test]
fn partition_change_bumps_epochs() {
    let (mut image, id) = with_topic();
    let change = |leader: Option<i32>, isr: Option<Vec<i32>>| Record::PartitionChange {
        topic_id: id,
        partition: 0,
        leader,
        isr,
        replicas: None,
    };
    // A shrunk ISR: partition epoch only.
    image
        .apply_batch(2, &[change(None, Some(vec![1]))])
        .unwrap();
    let p = &image.topics["t"].partitions[0];
    assert_eq!((p.leader, p.leader_epoch, p.partition_epoch), (1, 0, 1));
    // The same leader again changes nothing.
    image.apply_batch(3, &[change(Some(1), None)]).unwrap();
    assert_eq!(image.topics["t"].partitions[0].partition_epoch, 1);
    // A leader outside the ISR is refused; one inside bumps both epochs.
    assert!(image.apply_batch(4, &[change(Some(2), None)]).is_err());
    image
        .apply_batch(5, &[change(Some(2), Some(vec![1, 2]))])
        .unwrap();
    let p = &image.topics["t"].partitions[0];
    assert_eq!((p.leader, p.leader_epoch, p.partition_epoch), (2, 1, 2));
    // No leader.
    image.apply_batch(6, &[change(Some(-1), None)]).unwrap();
    let p = &image.topics["t"].partitions[0];
    assert_eq!((p.leader, p.leader_epoch, p.partition_epoch), (-1, 2, 3));
}

#[test]
fn broker_epoch_is_the_registration_index_and_fencing_needs_it() {
    let mut image = ClusterImage::default();
    image.apply_batch(7, &[register(1)]).unwrap();
    assert_eq!(image.brokers[&1].epoch, 7);
    assert!(image.brokers[&1].fenced);
    assert_eq!(image.unfenced_brokers().count(), 0);
    let stale = Record::UnfenceBroker {
        broker_id: 1,
        epoch: 6,
    };
    assert!(matches!(
        image.apply_batch(8, &[stale]),
        Err(ApplyError::StaleBrokerEpoch { .. })
    ));
    image
        .apply_batch(
            9,
            &[Record::UnfenceBroker {
                broker_id: 1,
                epoch: 7,
            }],
        )
        .unwrap();
    assert_eq!(image.unfenced_brokers().count(), 1);
    // A restart registers again with a larger epoch; the old one is stale.
    image.apply_batch(10, &[register(1)]).unwrap();
    assert_eq!(image.brokers[&1].epoch, 10);
    assert!(image
        .apply_batch(
            11,
            &[Record::FenceBroker {
                broker_id: 1,
                epoch: 7
            }]
        )
        .is_err());
}

#[test]
fn configs_need_their_topic_and_none_deletes() {
    let (mut image, _) = with_topic();
    let set = |name: &str, value: Option<&str>| Record::Config {
        resource: ConfigResource::Topic,
        resource_name: name.into(),
        name: "retention.ms".into(),
        value: value.map(String::from),
    };
    image.apply_batch(2, &[set("t", Some("1000"))]).unwrap();
    assert_eq!(image.topics["t"].configs["retention.ms"], "1000");
    assert_eq!(
        image.apply_batch(3, &[set("nope", Some("1"))]),
        Err(ApplyError::UnknownTopic("nope".into()))
    );
    image.apply_batch(4, &[set("t", None)]).unwrap();
    assert!(image.topics["t"].configs.is_empty());
}

#[test]
fn producer_id_blocks_move_forward() {
    let mut image = ClusterImage::default();
    let block = |next: i64| Record::ProducerIds {
        broker_id: 1,
        broker_epoch: 1,
        next_producer_id: next,
    };
    image.apply_batch(1, &[block(1000)]).unwrap();
    assert!(image.apply_batch(2, &[block(1000)]).is_err());
    assert!(image.apply_batch(3, &[block(500)]).is_err());
    image.apply_batch(4, &[block(2000)]).unwrap();
    assert_eq!(image.next_producer_id, 2000);
}

#[test]
fn remove_topic_takes_everything_and_the_name_is_free_again() {
    let (mut image, id) = with_topic();
    image
        .apply_batch(2, &[Record::RemoveTopic { topic_id: id }])
        .unwrap();
    assert!(image.topics.is_empty());
    assert_eq!(
        image.apply_batch(3, &[Record::RemoveTopic { topic_id: id }]),
        Err(ApplyError::UnknownTopicId(id))
    );
    let new_id = Uuid::new_v4();
    image
        .apply_batch(4, &[topic("t", new_id), partition(new_id, 0, &[1], 1)])
        .unwrap();
    assert_eq!(image.topics["t"].id, new_id);
}
