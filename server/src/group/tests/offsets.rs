//! Committed offsets: commits, fetches, deletes, retention, and
//! DescribeGroups/ListGroups.

use super::*;

#[test]
fn commits_persist_and_survive_a_restart() {
    run(|| async {
        let h = Harness::new(config()).await;
        let (leader, follower, generation) = stable_pair(&h, "g").await;
        assert_eq!(
            commit(&h.coord, "g", generation, &leader, 0, 10).await,
            NONE
        );
        assert_eq!(
            commit(&h.coord, "g", generation, &follower, 1, 20).await,
            NONE
        );
        assert_eq!(
            commit(&h.coord, "g", generation, &leader, 0, 11).await,
            NONE
        );
        // Standalone commits (generation -1) go to a group without members.
        assert_eq!(commit(&h.coord, "solo", -1, "", 2, 7).await, NONE);
        assert_eq!(fetch(&h.coord, "g", 0).await, (11, "meta".to_string()));
        assert_eq!(fetch(&h.coord, "g", 5).await, (-1, String::new()));
        let restarted = h.restart().await;
        assert_eq!(fetch(&restarted, "g", 0).await, (11, "meta".to_string()));
        assert_eq!(fetch(&restarted, "g", 1).await, (20, "meta".to_string()));
        assert_eq!(fetch(&restarted, "solo", 2).await, (7, "meta".to_string()));
        // v1..v7 single-group form with all topics (null list, v2+).
        let resp = restarted
            .offset_fetch(
                OffsetFetchRequest::default()
                    .with_group_id(GroupId(s("g")))
                    .with_topics(None),
                7,
            )
            .await;
        assert_eq!(resp.error_code, NONE);
        let mut got: Vec<(i32, i64, i32)> = resp.topics[0]
            .partitions
            .iter()
            .map(|p| {
                (
                    p.partition_index,
                    p.committed_offset,
                    p.committed_leader_epoch,
                )
            })
            .collect();
        got.sort();
        assert_eq!(got, vec![(0, 11, 7), (1, 20, 7)]);
        // The group's generation and members are persisted (GroupMetadata
        // records): its members commit on after the restart.
        assert_eq!(
            commit(&restarted, "g", generation, &leader, 0, 12).await,
            NONE
        );
    });
}

/// A restarted (or newly elected) coordinator loads the members of the last
/// completed rebalance, with their generation, assignments and protocol;
/// they heartbeat on, and when they leave, the empty group is stored too.
/// Deleting the group tombstones its metadata, so it does not come back.
#[test]
fn group_metadata_survives_a_restart() {
    run(|| async {
        let h = Harness::new(config()).await;
        let (leader, follower, generation) = stable_pair(&h, "g").await;
        let restarted = h.restart().await;
        assert_eq!(
            heartbeat(&restarted, "g", &follower, generation).await,
            NONE
        );
        assert_eq!(heartbeat(&restarted, "g", &leader, generation).await, NONE);
        assert_eq!(
            heartbeat(&restarted, "g", &follower, generation + 1).await,
            ILLEGAL_GENERATION
        );
        let described = restarted
            .describe_groups(
                DescribeGroupsRequest::default().with_groups(vec![GroupId(s("g"))]),
                5,
            )
            .await;
        let group = &described.groups[0];
        assert_eq!(group.group_state.as_str(), "Stable");
        assert_eq!(group.protocol_data.as_str(), "range");
        let mut assigned: Vec<(String, Vec<u8>)> = group
            .members
            .iter()
            .map(|m| (m.member_id.to_string(), m.member_assignment.to_vec()))
            .collect();
        assigned.sort();
        let mut expect = vec![
            (leader.clone(), b"A".to_vec()),
            (follower.clone(), b"B".to_vec()),
        ];
        expect.sort();
        assert_eq!(assigned, expect);

        // Both leave: the group is empty at the next generation, stored.
        for member in [&leader, &follower] {
            let leave = LeaveGroupRequest::default()
                .with_group_id(GroupId(s("g")))
                .with_member_id(s(member));
            assert_eq!(restarted.leave_group(leave, 0).await.error_code, NONE);
        }
        settle().await;
        assert_eq!(commit(&restarted, "g", -1, "", 0, 5).await, NONE);
        let again = h.restart().await;
        assert_eq!(
            heartbeat(&again, "g", &leader, generation).await,
            UNKNOWN_MEMBER_ID
        );
        let described = again
            .describe_groups(
                DescribeGroupsRequest::default().with_groups(vec![GroupId(s("g"))]),
                5,
            )
            .await;
        assert_eq!(described.groups[0].group_state.as_str(), "Empty");
        assert!(described.groups[0].members.is_empty());

        let delete = DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s("g"))]);
        assert_eq!(
            again.delete_groups(delete, 2).await.results[0].error_code,
            NONE
        );
        let after = h.restart().await;
        let list = after.list_groups(ListGroupsRequest::default(), 4).await;
        assert!(list.groups.iter().all(|g| g.group_id.0.as_str() != "g"));
    });
}

#[test]
fn bad_commits_are_refused_and_change_nothing() {
    run(|| async {
        let h = Harness::new(config()).await;
        let (leader, _, generation) = stable_pair(&h, "g").await;
        assert_eq!(commit(&h.coord, "g", generation, &leader, 0, 5).await, NONE);
        let log_end: i64 = h.logs.iter().map(|(_, l)| l.log_end_offset()).sum();
        assert_eq!(
            commit_topic(&h.coord, "g", generation, &leader, "nope", 0, 9).await,
            UNKNOWN_TOPIC_OR_PARTITION
        );
        assert_eq!(
            commit(&h.coord, "g", generation, &leader, 99, 9).await,
            UNKNOWN_TOPIC_OR_PARTITION
        );
        assert_eq!(
            commit(&h.coord, "g", generation + 1, &leader, 0, 9).await,
            ILLEGAL_GENERATION
        );
        assert_eq!(
            commit(&h.coord, "g", generation, "ghost", 0, 9).await,
            UNKNOWN_MEMBER_ID
        );
        assert_eq!(
            commit(&h.coord, "g", -1, "", 0, 9).await,
            UNKNOWN_MEMBER_ID,
            "a group with members"
        );
        assert_eq!(
            commit(&h.coord, "fresh", 3, "m", 0, 9).await,
            ILLEGAL_GENERATION
        );
        let big = OffsetCommitRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_generation_id_or_member_epoch(generation)
            .with_member_id(s(&leader))
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(TopicName(s("t")))
                .with_partitions(vec![OffsetCommitRequestPartition::default()
                    .with_partition_index(0)
                    .with_committed_offset(9)
                    .with_committed_metadata(Some(s(&"x".repeat(5000))))])]);
        assert_eq!(
            h.coord.offset_commit(big, 8).await.topics[0].partitions[0].error_code,
            OFFSET_METADATA_TOO_LARGE
        );
        assert_eq!(fetch(&h.coord, "g", 0).await.0, 5);
        let after: i64 = h.logs.iter().map(|(_, l)| l.log_end_offset()).sum();
        assert_eq!(after, log_end, "nothing was written");
    });
}

#[test]
fn groups_on_other_shards_get_not_coordinator() {
    run(|| async {
        let h = Harness::new(config()).await;
        let mine = offsets_partition_for("g", PARTITIONS);
        let logs: Vec<_> = h.logs.iter().filter(|(p, _)| *p == mine).cloned().collect();
        let coord = coordinator(config(), logs, h.clock.clone());
        assert_eq!(
            coord
                .join_group(join_req("g", "", RANGE), 5, &client())
                .await
                .error_code,
            COORDINATOR_LOAD_IN_PROGRESS
        );
        coord.load().await.unwrap();
        let other = (0..100)
            .map(|i| format!("g{i}"))
            .find(|g| offsets_partition_for(g, PARTITIONS) != mine)
            .unwrap();
        assert!(coord.owns("g") && !coord.owns(&other));
        assert_eq!(
            coord
                .join_group(join_req(&other, "", RANGE), 5, &client())
                .await
                .error_code,
            NOT_COORDINATOR
        );
        assert_eq!(commit(&coord, &other, -1, "", 0, 1).await, NOT_COORDINATOR);
        let resp = coord
            .offset_fetch(
                OffsetFetchRequest::default()
                    .with_group_id(GroupId(s(&other)))
                    .with_topics(None),
                5,
            )
            .await;
        assert_eq!(resp.error_code, NOT_COORDINATOR);
        assert_eq!(
            coord
                .join_group(join_req("g", "", RANGE), 5, &client())
                .await
                .error_code,
            MEMBER_ID_REQUIRED
        );
        coord.shutdown();
        assert_eq!(
            heartbeat(&coord, "g", "x", 1).await,
            COORDINATOR_NOT_AVAILABLE
        );
    });
}

#[test]
fn delete_groups_and_offset_delete_write_tombstones() {
    run(|| async {
        let h = Harness::new(config()).await;
        assert_eq!(commit(&h.coord, "solo", -1, "", 0, 3).await, NONE);
        assert_eq!(commit(&h.coord, "solo", -1, "", 1, 4).await, NONE);
        let del = OffsetDeleteRequest::default()
            .with_group_id(GroupId(s("solo")))
            .with_topics(vec![OffsetDeleteRequestTopic::default()
                .with_name(TopicName(s("t")))
                .with_partitions(vec![
                    OffsetDeleteRequestPartition::default().with_partition_index(0)
                ])]);
        let resp = h.coord.offset_delete(del, 0).await;
        assert_eq!(
            (resp.error_code, resp.topics[0].partitions[0].error_code),
            (NONE, NONE)
        );
        assert_eq!(fetch(&h.coord, "solo", 0).await.0, -1);
        assert_eq!(fetch(&h.coord, "solo", 1).await.0, 4);
        let (_, _, _) = stable_pair(&h, "busy").await;
        let req = DeleteGroupsRequest::default().with_groups_names(vec![
            GroupId(s("solo")),
            GroupId(s("busy")),
            GroupId(s("none")),
        ]);
        let errors: Vec<i16> = h
            .coord
            .delete_groups(req, 2)
            .await
            .results
            .iter()
            .map(|r| r.error_code)
            .collect();
        assert_eq!(errors, vec![NONE, NON_EMPTY_GROUP, GROUP_ID_NOT_FOUND]);
        assert_eq!(fetch(&h.coord, "solo", 1).await.0, -1);
        let restarted = h.restart().await;
        assert_eq!(
            fetch(&restarted, "solo", 0).await.0,
            -1,
            "the tombstones replay"
        );
        assert_eq!(fetch(&restarted, "solo", 1).await.0, -1);
        let list = restarted.list_groups(ListGroupsRequest::default(), 4).await;
        assert!(list.groups.iter().all(|g| g.group_id.0.as_str() != "solo"));
    });
}

#[test]
fn offset_delete_refuses_subscribed_topics_of_active_groups() {
    run(|| async {
        let h = Harness::new(GroupConfig {
            initial_rebalance_delay_ms: 0,
            ..config()
        })
        .await;
        // ConsumerProtocolSubscription v0: version, [topics], user data.
        let mut sub = BytesMut::new();
        sub.put_i16(0);
        sub.put_i32(1);
        sub.put_i16(1);
        sub.put_slice(b"t");
        sub.put_i32(-1);
        let r = h
            .coord
            .join_group(join_req("g", "", &[("range", &sub[..])]), 3, &client())
            .await;
        let m = r.member_id.to_string();
        h.coord.sync_group(sync_req("g", &m, 1, &[]), 5).await;
        let del = OffsetDeleteRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_topics(vec![OffsetDeleteRequestTopic::default()
                .with_name(TopicName(s("t")))
                .with_partitions(vec![
                    OffsetDeleteRequestPartition::default().with_partition_index(0)
                ])]);
        let resp = h.coord.offset_delete(del, 0).await;
        assert_eq!(
            resp.topics[0].partitions[0].error_code,
            GROUP_SUBSCRIBED_TO_TOPIC
        );
    });
}

#[test]
fn offsets_of_empty_groups_expire_after_retention() {
    run(|| async {
        let cfg = GroupConfig {
            offsets_retention_ms: 60_000,
            offsets_retention_check_interval_ms: 1000,
            ..config()
        };
        let h = Harness::new(cfg).await;
        assert_eq!(commit(&h.coord, "old", -1, "", 0, 3).await, NONE);
        h.advance(30_000);
        assert_eq!(commit(&h.coord, "newer", -1, "", 0, 4).await, NONE);
        h.advance(30_000);
        h.coord.tick().await;
        assert_eq!(fetch(&h.coord, "old", 0).await.0, -1);
        assert_eq!(fetch(&h.coord, "newer", 0).await.0, 4);
        let restarted = h.restart().await;
        assert_eq!(
            fetch(&restarted, "old", 0).await.0,
            -1,
            "expiry wrote a tombstone"
        );
        assert_eq!(fetch(&restarted, "newer", 0).await.0, 4);
    });
}

#[test]
fn describe_and_list_groups() {
    run(|| async {
        let h = Harness::new(config()).await;
        let (leader, follower, _) = stable_pair(&h, "g").await;
        commit(&h.coord, "solo", -1, "", 0, 1).await;
        let d = h
            .coord
            .describe_groups(
                DescribeGroupsRequest::default()
                    .with_groups(vec![GroupId(s("g")), GroupId(s("zz"))]),
                5,
            )
            .await;
        let g = &d.groups[0];
        assert_eq!(
            (
                g.error_code,
                g.group_state.as_str(),
                g.protocol_type.as_str(),
                g.protocol_data.as_str()
            ),
            (NONE, "Stable", "consumer", "range")
        );
        let ids: HashSet<String> = g.members.iter().map(|m| m.member_id.to_string()).collect();
        assert_eq!(ids, HashSet::from([leader.clone(), follower.clone()]));
        let lm = g
            .members
            .iter()
            .find(|m| m.member_id.as_str() == leader)
            .unwrap();
        assert_eq!(
            (&lm.member_assignment[..], lm.client_host.as_str()),
            (&b"A"[..], "/127.0.0.1")
        );
        assert_eq!(d.groups[1].group_state.as_str(), "Dead");
        let d6 = h
            .coord
            .describe_groups(
                DescribeGroupsRequest::default().with_groups(vec![GroupId(s("zz"))]),
                6,
            )
            .await;
        assert_eq!(d6.groups[0].error_code, GROUP_ID_NOT_FOUND);
        let l = h.coord.list_groups(ListGroupsRequest::default(), 4).await;
        let listed: Vec<(String, String)> = l
            .groups
            .iter()
            .map(|g| (g.group_id.0.to_string(), g.group_state.to_string()))
            .collect();
        assert_eq!(
            listed,
            vec![
                ("g".into(), "Stable".into()),
                ("solo".into(), "Empty".into())
            ]
        );
        let l = h
            .coord
            .list_groups(
                ListGroupsRequest::default().with_states_filter(vec![s("Empty")]),
                4,
            )
            .await;
        assert_eq!(l.groups.len(), 1);
    });
}

/// The error of OffsetFetch v8 for `group`.
async fn fetch_error(coord: &GroupCoordinator, group: &str) -> i16 {
    let req = OffsetFetchRequest::default().with_groups(vec![
        OffsetFetchRequestGroup::default().with_group_id(GroupId(s(group)))
    ]);
    coord.offset_fetch(req, 8).await.groups[0].error_code
}

/// In a cluster a coordinator answers for the partitions this node leads
/// (Kafka's onResignation / onElection): losing one drops its groups and
/// answers NOT_COORDINATOR, to a parked JoinGroup too, while other
/// partitions keep theirs; elected again at a new epoch, it is loading
/// (COORDINATOR_LOAD_IN_PROGRESS) until its log is replayed, with what
/// the other leader appended meanwhile (here a second coordinator over
/// the same log, as a replica holds it). A load overtaken by a newer
/// election changes nothing.
#[test]
fn partitions_load_and_unload_with_leadership() {
    run(|| async {
        let h = Harness::new(config()).await;
        let mine = offsets_partition_for("g", PARTITIONS);
        let other = (0..100)
            .map(|i| format!("g{i}"))
            .find(|g| offsets_partition_for(g, PARTITIONS) != mine)
            .unwrap();
        let (leader, follower, generation) = stable_pair(&h, "g").await;
        assert_eq!(
            commit(&h.coord, "g", generation, &leader, 0, 10).await,
            NONE
        );
        assert_eq!(commit(&h.coord, &other, -1, "", 0, 3).await, NONE);
        // The leader rejoins: parked until the follower does.
        let parked = spawn_join(&h.coord, join_req("g", &leader, RANGE), 5);
        settle().await;

        let all_but_mine: BTreeMap<i32, i32> = (0..PARTITIONS)
            .filter(|p| *p != mine)
            .map(|p| (p, 0))
            .collect();
        assert!(h.coord.on_leadership(&all_but_mine).is_empty());
        assert_eq!(parked.await.error_code, NOT_COORDINATOR);
        assert!(!h.coord.owns("g") && h.coord.owns(&other));
        assert_eq!(fetch_error(&h.coord, "g").await, NOT_COORDINATOR);
        assert_eq!(
            heartbeat(&h.coord, "g", &follower, generation).await,
            NOT_COORDINATOR
        );
        assert_eq!(commit(&h.coord, "g", -1, "", 0, 11).await, NOT_COORDINATOR);
        assert_eq!(fetch(&h.coord, &other, 0).await.0, 3);

        // Another leader commits to the same log meanwhile: it loaded the
        // group's members, so the leader commits at its generation.
        let elsewhere = h.restart().await;
        assert_eq!(
            commit(&elsewhere, "g", generation, &leader, 0, 20).await,
            NONE
        );

        let mut led = all_but_mine.clone();
        led.insert(mine, 1);
        let first = h.coord.on_leadership(&led);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].partition, mine);
        assert_eq!(
            fetch_error(&h.coord, "g").await,
            COORDINATOR_LOAD_IN_PROGRESS
        );
        // Elected again before the load ran: the first load is dropped.
        led.insert(mine, 2);
        let second = h.coord.on_leadership(&led);
        assert_eq!(second.len(), 1);
        h.coord.load_partition(first[0]).await.unwrap();
        assert_eq!(
            fetch_error(&h.coord, "g").await,
            COORDINATOR_LOAD_IN_PROGRESS
        );
        h.coord.load_partition(second[0]).await.unwrap();
        assert!(h.coord.owns("g"));
        assert_eq!(fetch(&h.coord, "g", 0).await, (20, "meta".to_string()));
        assert_eq!(fetch(&h.coord, &other, 0).await.0, 3);
        // The members of the last completed rebalance are loaded with
        // their generation (the rejoin in flight was in memory only).
        assert_eq!(heartbeat(&h.coord, "g", &follower, generation).await, NONE);
        // The same view again changes nothing.
        assert!(h.coord.on_leadership(&led).is_empty());
        assert!(h.coord.owns("g"));
    });
}
