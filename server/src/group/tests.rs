//! State-machine and persistence tests of the group coordinator, on a manual
//! clock: time only moves when a test advances it, and the timer work runs
//! when a test calls `tick`, so every case is deterministic.

use std::cell::Cell;
use std::collections::HashSet;
use std::rc::Rc;

use bytes::{BufMut, Bytes, BytesMut};
use glommio::LocalExecutorBuilder;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_delete_request::{
    OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};
use strom_engine::{LogConfig, PartitionLog};

use super::codes::*;
use super::*;

const PARTITIONS: i32 = 4;

struct Topics;

impl TopicLookup for Topics {
    fn partition_exists(&self, topic: &str, partition: i32) -> bool {
        topic == "t" && (0..6).contains(&partition)
    }
}

struct Harness {
    coord: GroupCoordinator,
    clock: Rc<Cell<i64>>,
    logs: Vec<(i32, PartitionLog)>,
    _dir: tempfile::TempDir,
}

impl Harness {
    async fn new(config: GroupConfig) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let mut logs = Vec::new();
        for p in 0..config.offsets_topic_num_partitions {
            let log = PartitionLog::open(
                dir.path().join(format!("{OFFSETS_TOPIC}-{p}")),
                small_log_config(),
            )
            .await
            .unwrap();
            logs.push((p, log));
        }
        let clock = Rc::new(Cell::new(1_000_000));
        let coord = coordinator(config, logs.clone(), clock.clone());
        coord.load().await.unwrap();
        Harness {
            coord,
            clock,
            logs,
            _dir: dir,
        }
    }

    /// A second coordinator over the same logs, as after a restart.
    async fn restart(&self) -> GroupCoordinator {
        let coord = coordinator(
            self.coord.config().clone(),
            self.logs.clone(),
            self.clock.clone(),
        );
        coord.load().await.unwrap();
        coord
    }

    fn advance(&self, ms: i64) {
        self.clock.set(self.clock.get() + ms);
    }
}

/// Small, not preallocated segments: tests open many logs at once.
fn small_log_config() -> LogConfig {
    LogConfig {
        segment_bytes: 1 << 20,
        preallocate: false,
        ..LogConfig::default()
    }
}

fn coordinator(
    config: GroupConfig,
    logs: Vec<(i32, PartitionLog)>,
    clock: Rc<Cell<i64>>,
) -> GroupCoordinator {
    GroupCoordinator::new(config, logs, Rc::new(Topics), Rc::new(move || clock.get()))
}

fn config() -> GroupConfig {
    GroupConfig {
        offsets_topic_num_partitions: PARTITIONS,
        ..GroupConfig::default()
    }
}

fn run<F: std::future::Future<Output = ()> + 'static>(f: impl FnOnce() -> F + Send + 'static) {
    LocalExecutorBuilder::default()
        .spawn(move || async move { f().await })
        .unwrap()
        .join()
        .unwrap();
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn client() -> ClientInfo {
    ClientInfo {
        client_id: "c".into(),
        client_host: "/127.0.0.1".into(),
    }
}

fn join_req(group: &str, member: &str, protocols: &[(&str, &[u8])]) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(30_000)
        .with_member_id(s(member))
        .with_protocol_type(s("consumer"))
        .with_protocols(
            protocols
                .iter()
                .map(|(n, m)| {
                    JoinGroupRequestProtocol::default()
                        .with_name(s(n))
                        .with_metadata(Bytes::copy_from_slice(m))
                })
                .collect(),
        )
}

const RANGE: &[(&str, &[u8])] = &[("range", b"m")];

/// Spawns a JoinGroup so that several members can wait together.
fn spawn_join(
    coord: &GroupCoordinator,
    req: JoinGroupRequest,
    version: i16,
) -> glommio::Task<JoinGroupResponse> {
    let coord = coord.clone();
    glommio::spawn_local(async move { coord.join_group(req, version, &client()).await })
}

fn spawn_sync(coord: &GroupCoordinator, req: SyncGroupRequest) -> glommio::Task<SyncGroupResponse> {
    let coord = coord.clone();
    glommio::spawn_local(async move { coord.sync_group(req, 5).await })
}

/// Lets spawned tasks run until they park.
async fn settle() {
    for _ in 0..10 {
        futures_lite::future::yield_now().await;
    }
}

/// The MEMBER_ID_REQUIRED round of JoinGroup v4+.
async fn member_id(coord: &GroupCoordinator, group: &str) -> String {
    let r = coord
        .join_group(join_req(group, "", RANGE), 5, &client())
        .await;
    assert_eq!(r.error_code, MEMBER_ID_REQUIRED);
    assert!(!r.member_id.is_empty());
    r.member_id.to_string()
}

fn sync_req(
    group: &str,
    member: &str,
    generation: i32,
    assignments: &[(&str, &[u8])],
) -> SyncGroupRequest {
    SyncGroupRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_member_id(s(member))
        .with_generation_id(generation)
        .with_assignments(
            assignments
                .iter()
                .map(|(m, a)| {
                    SyncGroupRequestAssignment::default()
                        .with_member_id(s(m))
                        .with_assignment(Bytes::copy_from_slice(a))
                })
                .collect(),
        )
}

async fn heartbeat(coord: &GroupCoordinator, group: &str, member: &str, generation: i32) -> i16 {
    let req = HeartbeatRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_member_id(s(member))
        .with_generation_id(generation);
    coord.heartbeat(req, 4).await.error_code
}

/// Two members through a full first rebalance: returns (leader, follower,
/// generation), group Stable with assignments "A" and "B".
async fn stable_pair(h: &Harness, group: &str) -> (String, String, i32) {
    let a = member_id(&h.coord, group).await;
    let b = member_id(&h.coord, group).await;
    let ja = spawn_join(&h.coord, join_req(group, &a, RANGE), 5);
    let jb = spawn_join(&h.coord, join_req(group, &b, RANGE), 5);
    settle().await;
    // The initial rebalance delay holds the first generation back.
    h.coord.tick().await;
    settle().await;
    h.advance(3000);
    h.coord.tick().await;
    let (ra, rb) = (ja.await, jb.await);
    assert_eq!((ra.error_code, rb.error_code), (NONE, NONE));
    assert_eq!(ra.generation_id, 1);
    assert_eq!(ra.generation_id, rb.generation_id);
    assert_eq!(ra.leader, rb.leader);
    let (leader, follower, leader_resp) = if ra.leader == ra.member_id {
        (a, b, ra)
    } else {
        (b, a, rb)
    };
    assert_eq!(
        leader_resp.members.len(),
        2,
        "the leader gets every member's metadata"
    );
    assert_eq!(leader_resp.protocol_name.as_deref(), Some("range"));
    let fs = spawn_sync(&h.coord, sync_req(group, &follower, 1, &[]));
    settle().await;
    let ls = h
        .coord
        .sync_group(
            sync_req(group, &leader, 1, &[(&leader, b"A"), (&follower, b"B")]),
            5,
        )
        .await;
    assert_eq!(ls.error_code, NONE);
    assert_eq!(&ls.assignment[..], b"A");
    let fs = fs.await;
    assert_eq!(fs.error_code, NONE);
    assert_eq!(&fs.assignment[..], b"B");
    (leader, follower, 1)
}

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

async fn commit(
    coord: &GroupCoordinator,
    group: &str,
    generation: i32,
    member: &str,
    partition: i32,
    offset: i64,
) -> i16 {
    commit_topic(coord, group, generation, member, "t", partition, offset).await
}

async fn commit_topic(
    coord: &GroupCoordinator,
    group: &str,
    generation: i32,
    member: &str,
    topic: &str,
    partition: i32,
    offset: i64,
) -> i16 {
    let req = OffsetCommitRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(s(member))
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(s(topic)))
            .with_partitions(vec![OffsetCommitRequestPartition::default()
                .with_partition_index(partition)
                .with_committed_offset(offset)
                .with_committed_leader_epoch(7)
                .with_committed_metadata(Some(s("meta")))])]);
    let resp = coord.offset_commit(req, 8).await;
    resp.topics[0].partitions[0].error_code
}

/// (offset, metadata) committed for t-`partition`, via OffsetFetch v8's batched form.
async fn fetch(coord: &GroupCoordinator, group: &str, partition: i32) -> (i64, String) {
    let req = OffsetFetchRequest::default().with_groups(vec![OffsetFetchRequestGroup::default()
        .with_group_id(GroupId(s(group)))
        .with_topics(Some(vec![OffsetFetchRequestTopics::default()
            .with_name(TopicName(s("t")))
            .with_partition_indexes(vec![partition])]))]);
    let resp = coord.offset_fetch(req, 8).await;
    assert_eq!(resp.groups[0].error_code, NONE);
    let p = &resp.groups[0].topics[0].partitions[0];
    (
        p.committed_offset,
        p.metadata.as_deref().unwrap_or("").to_string(),
    )
}

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
        // The group's generation is not persisted: its old members must rejoin.
        assert_eq!(
            commit(&restarted, "g", generation, &leader, 0, 12).await,
            UNKNOWN_MEMBER_ID
        );
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
    assert_eq!(r.error_code, COORDINATOR_NOT_AVAILABLE);
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
