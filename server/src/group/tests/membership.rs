//! JoinGroup, SyncGroup, Heartbeat and LeaveGroup, and the timers that
//! expire sessions and end rebalances.

use super::*;

#[test]
fn two_members_rebalance_and_sync() {
    run(|| async {
        let h = Harness::new(config()).await;
        let (leader, follower, generation) = stable_pair(&h, "g").await;
        assert_eq!(heartbeat(&h.coord, "g", &leader, generation).await, NONE);
        assert_eq!(heartbeat(&h.coord, "g", &follower, generation).await, NONE);
        assert_eq!(
            heartbeat(&h.coord, "g", &follower, generation + 1).await,
            ILLEGAL_GENERATION
        );
        assert_eq!(
            heartbeat(&h.coord, "g", "nobody", generation).await,
            UNKNOWN_MEMBER_ID
        );
        assert_eq!(
            heartbeat(&h.coord, "other", "nobody", generation).await,
            UNKNOWN_MEMBER_ID
        );
        assert_eq!(
            heartbeat(&h.coord, "", "nobody", generation).await,
            INVALID_GROUP_ID
        );
        // A stable follower's rejoin with the same metadata changes nothing.
        let r = h
            .coord
            .join_group(join_req("g", &follower, RANGE), 5, &client())
            .await;
        assert_eq!((r.error_code, r.generation_id), (NONE, generation));
        assert!(r.members.is_empty());
    });
}

#[test]
fn join_v0_to_v3_gets_a_member_id_without_the_extra_round() {
    run(|| async {
        let h = Harness::new(GroupConfig {
            initial_rebalance_delay_ms: 0,
            ..config()
        })
        .await;
        let r = h
            .coord
            .join_group(join_req("g", "", RANGE), 3, &client())
            .await;
        assert_eq!(r.error_code, NONE);
        assert_eq!(r.generation_id, 1);
        assert_eq!(r.leader, r.member_id);
        assert!(r.member_id.starts_with("c-"));
    });
}

#[test]
fn new_member_triggers_rebalance_and_everyone_rejoins() {
    run(|| async {
        let h = Harness::new(config()).await;
        let (leader, follower, generation) = stable_pair(&h, "g").await;
        let c = member_id(&h.coord, "g").await;
        let jc = spawn_join(&h.coord, join_req("g", &c, RANGE), 5);
        settle().await;
        assert_eq!(
            heartbeat(&h.coord, "g", &leader, generation).await,
            REBALANCE_IN_PROGRESS
        );
        // A commit during PreparingRebalance with the old generation is still accepted.
        assert_eq!(commit(&h.coord, "g", generation, &leader, 0, 5).await, NONE);
        let sync = h
            .coord
            .sync_group(sync_req("g", &follower, generation, &[]), 5)
            .await;
        assert_eq!(sync.error_code, REBALANCE_IN_PROGRESS);
        let jl = spawn_join(&h.coord, join_req("g", &leader, RANGE), 5);
        settle().await;
        let rf = h
            .coord
            .join_group(join_req("g", &follower, RANGE), 5, &client())
            .await;
        let (rl, rc) = (jl.await, jc.await);
        for r in [&rf, &rl, &rc] {
            assert_eq!(r.error_code, NONE);
            assert_eq!(r.generation_id, 2);
            assert_eq!(r.leader.as_str(), leader, "the leader keeps its role");
        }
        assert_eq!(rl.members.len(), 3);
        assert!(rf.members.is_empty() && rc.members.is_empty());
        // Commits of generation 2 are refused until the leader has synced.
        assert_eq!(
            commit(&h.coord, "g", 2, &c, 0, 6).await,
            REBALANCE_IN_PROGRESS
        );
        assert_eq!(commit(&h.coord, "g", 1, &c, 0, 6).await, ILLEGAL_GENERATION);
    });
}

#[test]
fn expired_session_removes_the_member_and_rebalances() {
    run(|| async {
        let h = Harness::new(config()).await;
        let (leader, follower, generation) = stable_pair(&h, "g").await;
        // The follower keeps heartbeating; the leader goes silent.
        for _ in 0..4 {
            h.advance(3000);
            assert_eq!(heartbeat(&h.coord, "g", &follower, generation).await, NONE);
            h.coord.tick().await;
        }
        assert_eq!(
            heartbeat(&h.coord, "g", &follower, generation).await,
            REBALANCE_IN_PROGRESS
        );
        assert_eq!(
            heartbeat(&h.coord, "g", &leader, generation).await,
            UNKNOWN_MEMBER_ID
        );
        let r = h
            .coord
            .join_group(join_req("g", &follower, RANGE), 5, &client())
            .await;
        assert_eq!((r.error_code, r.generation_id), (NONE, 2));
        assert_eq!(r.leader.as_str(), follower, "the survivor becomes leader");
        assert_eq!(r.members.len(), 1);
    });
}

#[test]
fn members_that_do_not_rejoin_are_dropped_at_the_rebalance_timeout() {
    run(|| async {
        let h = Harness::new(config()).await;
        let (leader, follower, _) = stable_pair(&h, "g").await;
        let jl = spawn_join(
            &h.coord,
            join_req("g", &leader, &[("range", b"changed")]),
            5,
        );
        settle().await;
        // The follower heartbeats (REBALANCE_IN_PROGRESS) but never rejoins.
        for _ in 0..11 {
            h.advance(3000);
            heartbeat(&h.coord, "g", &follower, 1).await;
            h.coord.tick().await;
        }
        let r = jl.await;
        assert_eq!(
            (r.error_code, r.generation_id, r.members.len()),
            (NONE, 2, 1)
        );
    });
}

#[test]
fn leave_group_rebalances_the_rest() {
    run(|| async {
        let h = Harness::new(config()).await;
        let (leader, follower, generation) = stable_pair(&h, "g").await;
        let req = LeaveGroupRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_member_id(s(&leader));
        assert_eq!(h.coord.leave_group(req, 1).await.error_code, NONE);
        assert_eq!(
            heartbeat(&h.coord, "g", &follower, generation).await,
            REBALANCE_IN_PROGRESS
        );
        let r = h
            .coord
            .join_group(join_req("g", &follower, RANGE), 5, &client())
            .await;
        assert_eq!((r.error_code, r.generation_id), (NONE, 2));
        // v3+ batch form: one known, one unknown.
        let req = LeaveGroupRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_members(vec![
                MemberIdentity::default().with_member_id(s(&follower)),
                MemberIdentity::default().with_member_id(s("ghost")),
            ]);
        let resp = h.coord.leave_group(req, 4).await;
        assert_eq!(resp.error_code, NONE);
        let errors: Vec<i16> = resp.members.iter().map(|m| m.error_code).collect();
        assert_eq!(errors, vec![NONE, UNKNOWN_MEMBER_ID]);
        let d = h
            .coord
            .describe_groups(
                DescribeGroupsRequest::default().with_groups(vec![GroupId(s("g"))]),
                5,
            )
            .await;
        assert_eq!(d.groups[0].group_state.as_str(), "Empty");
    });
}

#[test]
fn protocol_selection_and_inconsistent_protocols() {
    run(|| async {
        let h = Harness::new(GroupConfig {
            initial_rebalance_delay_ms: 0,
            ..config()
        })
        .await;
        let a = member_id(&h.coord, "g").await;
        let b = member_id(&h.coord, "g").await;
        let ja = spawn_join(
            &h.coord,
            join_req("g", &a, &[("range", b"1"), ("cooperative-sticky", b"2")]),
            5,
        );
        let jb = spawn_join(
            &h.coord,
            join_req("g", &b, &[("cooperative-sticky", b"3")]),
            5,
        );
        settle().await;
        let (ra, rb) = (ja.await, jb.await);
        assert_eq!(ra.protocol_name.as_deref(), Some("cooperative-sticky"));
        assert_eq!(rb.protocol_name.as_deref(), Some("cooperative-sticky"));
        let leader = if ra.leader == ra.member_id { &ra } else { &rb };
        let mut metas: Vec<Bytes> = leader.members.iter().map(|m| m.metadata.clone()).collect();
        metas.sort();
        assert_eq!(
            metas,
            vec![Bytes::from_static(b"2"), Bytes::from_static(b"3")]
        );
        let r = h
            .coord
            .join_group(join_req("g", "", &[("roundrobin", b"")]), 5, &client())
            .await;
        assert_eq!(r.error_code, INCONSISTENT_GROUP_PROTOCOL);
        let r = h
            .coord
            .join_group(join_req("g", "", &[]), 5, &client())
            .await;
        assert_eq!(r.error_code, INCONSISTENT_GROUP_PROTOCOL);
        let mut req = join_req("g", "", RANGE);
        req.session_timeout_ms = 10;
        assert_eq!(
            h.coord.join_group(req, 5, &client()).await.error_code,
            INVALID_SESSION_TIMEOUT
        );
        let stranger = join_req("g", "stranger", &[("cooperative-sticky", b"")]);
        assert_eq!(
            h.coord.join_group(stranger, 5, &client()).await.error_code,
            UNKNOWN_MEMBER_ID
        );
    });
}

#[test]
fn cooperative_rejoin_with_new_metadata_runs_another_rebalance() {
    run(|| async {
        let h = Harness::new(config()).await;
        let (leader, follower, _) = stable_pair(&h, "g").await;
        // A follower rejoining with changed metadata (its owned partitions
        // changed after a revocation) starts generation 2.
        let jf = spawn_join(
            &h.coord,
            join_req("g", &follower, &[("range", b"owned-less")]),
            5,
        );
        settle().await;
        let rl = h
            .coord
            .join_group(join_req("g", &leader, RANGE), 5, &client())
            .await;
        let rf = jf.await;
        assert_eq!((rl.generation_id, rf.generation_id), (2, 2));
        let fs = spawn_sync(&h.coord, sync_req("g", &follower, 2, &[]));
        settle().await;
        let ls = h
            .coord
            .sync_group(sync_req("g", &leader, 2, &[(&follower, b"F2")]), 5)
            .await;
        assert_eq!(
            (ls.error_code, ls.assignment.len()),
            (NONE, 0),
            "no assignment given means empty"
        );
        assert_eq!(&fs.await.assignment[..], b"F2");
    });
}

#[test]
fn static_member_restart_keeps_its_assignment_and_fences_the_old_id() {
    run(|| async {
        let h = Harness::new(GroupConfig {
            initial_rebalance_delay_ms: 0,
            ..config()
        })
        .await;
        let mut req = join_req("g", "", RANGE);
        req.group_instance_id = Some(s("instance-1"));
        // Static members skip the MEMBER_ID_REQUIRED round.
        let r = h.coord.join_group(req.clone(), 5, &client()).await;
        assert_eq!((r.error_code, r.generation_id), (NONE, 1));
        let old = r.member_id.to_string();
        assert!(old.starts_with("instance-1-"));
        let mut sync = sync_req("g", &old, 1, &[(&old, b"P")]);
        sync.group_instance_id = Some(s("instance-1"));
        assert_eq!(&h.coord.sync_group(sync, 5).await.assignment[..], b"P");
        // Restart: same instance id, no member id. Stable, same protocols: no rebalance.
        let r = h.coord.join_group(req, 5, &client()).await;
        assert_eq!((r.error_code, r.generation_id), (NONE, 1));
        let new = r.member_id.to_string();
        assert_ne!(new, old);
        let mut hb = HeartbeatRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_member_id(s(&old))
            .with_generation_id(1);
        hb.group_instance_id = Some(s("instance-1"));
        assert_eq!(
            h.coord.heartbeat(hb.clone(), 4).await.error_code,
            FENCED_INSTANCE_ID
        );
        hb.member_id = s(&new);
        assert_eq!(h.coord.heartbeat(hb, 4).await.error_code, NONE);
        let mut sync = sync_req("g", &new, 1, &[]);
        sync.group_instance_id = Some(s("instance-1"));
        assert_eq!(
            &h.coord.sync_group(sync, 5).await.assignment[..],
            b"P",
            "the assignment survives the restart"
        );
        // Leaving by instance id with the old member id is fenced.
        let leave = LeaveGroupRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_members(vec![MemberIdentity::default()
                .with_member_id(s(&old))
                .with_group_instance_id(Some(s("instance-1")))]);
        assert_eq!(
            h.coord.leave_group(leave, 4).await.members[0].error_code,
            FENCED_INSTANCE_ID
        );
    });
}

#[test]
fn pending_member_ids_expire() {
    run(|| async {
        let h = Harness::new(config()).await;
        let id = member_id(&h.coord, "g").await;
        h.advance(10_001);
        h.coord.tick().await;
        assert_eq!(
            h.coord
                .join_group(join_req("g", &id, RANGE), 5, &client())
                .await
                .error_code,
            UNKNOWN_MEMBER_ID
        );
    });
}
