//! Group placement, FindCoordinator, and responses at every advertised
//! version.

use super::*;

#[test]
fn java_hash_partitioning_matches_kafka() {
    assert_eq!(java_string_hash(""), 0);
    assert_eq!(java_string_hash("hello"), 99162322);
    assert_eq!(offsets_partition_for("hello", 50), 22);
    // "polygenelubricants".hashCode() == Integer.MIN_VALUE; Utils.abs maps it to 0.
    assert_eq!(java_string_hash("polygenelubricants"), i32::MIN);
    assert_eq!(offsets_partition_for("polygenelubricants", 50), 0);
    assert!((0..50).contains(&offsets_partition_for("some-group", 50)));
}

#[test]
fn find_coordinator_single_and_batched() {
    let node = CoordinatorNode {
        node_id: 1,
        host: "localhost".into(),
        port: 9092,
    };
    let r = find_coordinator(
        &FindCoordinatorRequest::default().with_key(s("g")),
        0,
        &node,
    );
    assert_eq!(
        (r.error_code, r.node_id.0, r.host.as_str(), r.port),
        (NONE, 1, "localhost", 9092)
    );
    let req = FindCoordinatorRequest::default().with_coordinator_keys(vec![s("a"), s("b")]);
    let r = find_coordinator(&req, 4, &node);
    assert_eq!(r.coordinators.len(), 2);
    assert!(r
        .coordinators
        .iter()
        .all(|c| c.error_code == NONE && c.port == 9092));
    let r = find_coordinator(
        &FindCoordinatorRequest::default()
            .with_key(s("tx"))
            .with_key_type(1),
        3,
        &node,
    );
    // No transactions: an error clients treat as fatal, that says why.
    assert_eq!(r.error_code, TRANSACTIONAL_ID_AUTHORIZATION_FAILED);
    assert!(r
        .error_message
        .as_ref()
        .is_some_and(|m| m.contains("transactions are not supported")));
    for v in 0..=4 {
        let req = if v >= 4 {
            req.clone()
        } else {
            FindCoordinatorRequest::default().with_key(s("g"))
        };
        find_coordinator(&req, v, &node)
            .encode(&mut BytesMut::new(), v)
            .unwrap();
    }
}

/// Every response the coordinator builds encodes at every advertised
/// version (the crate refuses fields a version does not have).
#[test]
fn responses_encode_at_every_advertised_version() {
    run(|| async {
        let h = Harness::new(GroupConfig {
            initial_rebalance_delay_ms: 0,
            ..config()
        })
        .await;
        let versions = |key: i16| {
            let (_, lo, hi) = SUPPORTED_VERSIONS
                .iter()
                .copied()
                .find(|(k, _, _)| *k == key)
                .unwrap();
            lo..=hi
        };
        // A one-member group completes its rebalance at once without the delay.
        let join_alone = |group: String, v: i16| {
            let coord = h.coord.clone();
            async move {
                let first = coord
                    .join_group(join_req(&group, "", RANGE), v, &client())
                    .await;
                first.encode(&mut BytesMut::new(), v).unwrap();
                if first.error_code != MEMBER_ID_REQUIRED {
                    return first;
                }
                coord
                    .join_group(join_req(&group, &first.member_id, RANGE), v, &client())
                    .await
            }
        };
        for v in versions(11) {
            let r = join_alone(format!("j{v}"), v).await;
            assert_eq!((r.error_code, r.generation_id), (NONE, 1));
            r.encode(&mut BytesMut::new(), v).unwrap();
        }
        for v in versions(14) {
            let r = join_alone(format!("s{v}"), 5).await;
            let member = r.member_id.to_string();
            let sync = h
                .coord
                .sync_group(
                    sync_req(&format!("s{v}"), &member, 1, &[(&member, b"x")]),
                    v,
                )
                .await;
            assert_eq!(sync.error_code, NONE);
            sync.encode(&mut BytesMut::new(), v).unwrap();
        }
        for v in versions(12) {
            let req = HeartbeatRequest::default()
                .with_group_id(GroupId(s("g")))
                .with_member_id(s("x"));
            h.coord
                .heartbeat(req, v)
                .await
                .encode(&mut BytesMut::new(), v)
                .unwrap();
        }
        for v in versions(13) {
            let req = LeaveGroupRequest::default()
                .with_group_id(GroupId(s("nope")))
                .with_member_id(if v <= 2 { s("x") } else { s("") })
                .with_members(if v >= 3 {
                    vec![MemberIdentity::default().with_member_id(s("x"))]
                } else {
                    vec![]
                });
            h.coord
                .leave_group(req, v)
                .await
                .encode(&mut BytesMut::new(), v)
                .unwrap();
        }
        for v in versions(8) {
            let req = OffsetCommitRequest::default()
                .with_group_id(GroupId(s("solo")))
                .with_generation_id_or_member_epoch(-1)
                .with_topics(vec![OffsetCommitRequestTopic::default()
                    .with_name(TopicName(s("t")))
                    .with_partitions(vec![
                        OffsetCommitRequestPartition::default().with_committed_offset(1)
                    ])]);
            h.coord
                .offset_commit(req, v)
                .await
                .encode(&mut BytesMut::new(), v)
                .unwrap();
        }
        for v in versions(9) {
            let req = if v >= 8 {
                OffsetFetchRequest::default().with_groups(vec![
                    OffsetFetchRequestGroup::default().with_group_id(GroupId(s("solo")))
                ])
            } else {
                OffsetFetchRequest::default()
                    .with_group_id(GroupId(s("solo")))
                    .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                        .with_name(TopicName(s("t")))
                        .with_partition_indexes(vec![0])]))
            };
            h.coord
                .offset_fetch(req, v)
                .await
                .encode(&mut BytesMut::new(), v)
                .unwrap();
            // And the error path (v1 has no top-level error).
            let req = OffsetFetchRequest::default()
                .with_group_id(GroupId(s("solo")))
                .with_topics(Some(vec![]));
            h.coord.shutdown();
            if v < 8 {
                h.coord
                    .offset_fetch(req, v)
                    .await
                    .encode(&mut BytesMut::new(), v)
                    .unwrap();
            }
            h.coord.inner.active.set(true);
        }
        for v in versions(15) {
            let req = DescribeGroupsRequest::default()
                .with_groups(vec![GroupId(s("s0")), GroupId(s("none"))]);
            h.coord
                .describe_groups(req, v)
                .await
                .encode(&mut BytesMut::new(), v)
                .unwrap();
        }
        for v in versions(16) {
            h.coord
                .list_groups(ListGroupsRequest::default(), v)
                .await
                .encode(&mut BytesMut::new(), v)
                .unwrap();
        }
        for v in versions(42) {
            let req = DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s("none"))]);
            h.coord
                .delete_groups(req, v)
                .await
                .encode(&mut BytesMut::new(), v)
                .unwrap();
        }
        let req = OffsetDeleteRequest::default().with_group_id(GroupId(s("none")));
        h.coord
            .offset_delete(req, 0)
            .await
            .encode(&mut BytesMut::new(), 0)
            .unwrap();
    });
}
