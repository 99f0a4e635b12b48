//! State-machine and persistence tests of the group coordinator, on a manual
//! clock: time only moves when a test advances it, and the timer work runs
//! when a test calls `tick`, so every case is deterministic.
//!
//! This file holds the harness and the request builders; the cases are in
//! `membership` (JoinGroup, SyncGroup, Heartbeat, LeaveGroup, timers),
//! `offsets` (commits, fetches, deletes, retention, Describe/ListGroups) and
//! `protocol` (placement, FindCoordinator, encoding at every version).

use std::cell::Cell;
use std::collections::{BTreeMap, HashSet};
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

mod membership;
mod offsets;
mod protocol;

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
