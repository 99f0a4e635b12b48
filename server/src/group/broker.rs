//! Glue between the broker's shards and the group coordinators.
//!
//! Each shard runs one [`GroupCoordinator`] (kept in a thread-local: a shard
//! is one executor thread) over the `__consumer_offsets` partitions placed
//! on it by the broker's placement rule. A group request is decoded on the
//! connection's shard and run on the shard owning the group's offsets
//! partition through the shard job mesh (`Shard::run_on`); requests naming
//! several groups are split per group, ListGroups asks every shard.

use std::cell::RefCell;
use std::future::Future;
use std::rc::{Rc, Weak};

use bytes::Bytes;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::DescribedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::OffsetFetchResponseGroup;
use kafka_protocol::messages::*;
use strom_engine::{EngineError, LogConfig, PartitionLog};

use super::codes::COORDINATOR_LOAD_IN_PROGRESS;

/// The answer when the coordinator shard has no loaded coordinator (it is
/// still starting, or stopping): retriable for every client, where
/// NO_COORDINATOR_YET makes librdkafka's `committed()` give up.
const NO_COORDINATOR_YET: i16 = COORDINATOR_LOAD_IN_PROGRESS;
use super::{
    find_coordinator, offsets_partition_for, system_clock, ClientInfo, CoordinatorNode,
    GroupCoordinator, TopicLookup, OFFSETS_TOPIC,
};
use crate::metadata::{owner_shard, partition_dir};
use crate::shard::Shard;
use crate::wire::{decode, respond, Reply, RequestContext};

thread_local! {
    static LOCAL: RefCell<Option<GroupCoordinator>> = const { RefCell::new(None) };
}

/// Kafka's `offsets.topic.segment.bytes` default.
const OFFSETS_SEGMENT_BYTES: u64 = 100 * 1024 * 1024;

/// This shard's coordinator, once started.
pub fn local() -> Option<GroupCoordinator> {
    LOCAL.with(|c| c.borrow().clone())
}

/// The log config of `__consumer_offsets` partitions: never deleted by time
/// (offsets expire by their own retention, as tombstones), small segments
/// not preallocated, since most of the 50 partitions stay tiny.
fn offsets_log_config() -> LogConfig {
    LogConfig {
        segment_bytes: OFFSETS_SEGMENT_BYTES,
        retention_ms: -1,
        preallocate: false,
        ..LogConfig::default()
    }
}

/// Opens (recovering) this shard's `__consumer_offsets` partitions, replays
/// them and starts the coordinator with its timer.
pub async fn start_shard(shard: &Rc<Shard>) -> Result<(), EngineError> {
    let config = shard.config.groups.clone();
    let mut logs = Vec::new();
    for p in 0..config.offsets_topic_num_partitions {
        if owner_shard(OFFSETS_TOPIC, p, shard.shards) != shard.id {
            continue;
        }
        let dir = partition_dir(&shard.config.data_dir, OFFSETS_TOPIC, p);
        logs.push((p, PartitionLog::open(&dir, offsets_log_config()).await?));
    }
    let owned = logs.len();
    let coord = GroupCoordinator::new(
        config,
        logs,
        Rc::new(ShardTopics(Rc::downgrade(shard))),
        system_clock(),
    );
    LOCAL.with(|c| *c.borrow_mut() = Some(coord.clone()));
    coord.load().await?;
    coord.spawn_timer().detach();
    tracing::info!(
        shard = shard.id,
        partitions = owned,
        "group coordinator loaded"
    );
    Ok(())
}

/// Stops the coordinator and closes its logs (clean-shutdown markers).
pub async fn stop_shard() {
    let coord = LOCAL.with(|c| c.borrow_mut().take());
    if let Some(coord) = coord {
        coord.close().await;
    }
}

/// Answers topic questions from the shard's metadata snapshot.
struct ShardTopics(Weak<Shard>);

impl TopicLookup for ShardTopics {
    fn partition_exists(&self, topic: &str, partition: i32) -> bool {
        let Some(shard) = self.0.upgrade() else {
            return false;
        };
        let meta = shard.metadata();
        meta.topics
            .get(topic)
            .is_some_and(|t| partition >= 0 && partition < t.partitions)
    }
}

fn coordinator_shard(shard: &Shard, group_id: &str) -> usize {
    let p = offsets_partition_for(group_id, shard.config.groups.offsets_topic_num_partitions);
    owner_shard(OFFSETS_TOPIC, p, shard.shards)
}

/// Runs `f` with the coordinator of `group_id`, on its shard. `None` when
/// that shard or its coordinator is not there (starting or stopping).
async fn on_coordinator<T, F, Fut>(shard: &Rc<Shard>, group_id: &str, f: F) -> Option<T>
where
    T: Send + 'static,
    F: FnOnce(GroupCoordinator) -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
{
    let target = coordinator_shard(shard, group_id);
    let out = shard
        .run_on(target, move |_| async move {
            match local() {
                Some(coord) => Some(f(coord).await),
                None => None,
            }
        })
        .await;
    out.ok().flatten()
}

/// Handles every group API; `api::dispatch` routes them here.
pub async fn dispatch(shard: &Rc<Shard>, ctx: &RequestContext, mut body: Bytes) -> Reply {
    let v = ctx.version;
    match ctx.api_key {
        ApiKey::FindCoordinator => match decode::<FindCoordinatorRequest>(&mut body, v) {
            Some(req) => {
                let (host, port) = shard.config.advertised();
                let node = CoordinatorNode {
                    node_id: shard.config.node_id,
                    host,
                    port,
                };
                respond(ctx, &find_coordinator(&req, v, &node))
            }
            None => Reply::Close,
        },
        ApiKey::JoinGroup => match decode::<JoinGroupRequest>(&mut body, v) {
            Some(req) => {
                let client = ClientInfo {
                    client_id: ctx.header.client_id.as_deref().unwrap_or("").to_string(),
                    client_host: String::new(),
                };
                let group = req.group_id.0.to_string();
                let resp = on_coordinator(shard, &group, move |c| async move {
                    c.join_group(req, v, &client).await
                })
                .await;
                respond(ctx, &resp.unwrap_or_else(|| join_unavailable(v)))
            }
            None => Reply::Close,
        },
        ApiKey::SyncGroup => {
            match decode::<SyncGroupRequest>(&mut body, v) {
                Some(req) => {
                    let group = req.group_id.0.to_string();
                    let resp = on_coordinator(shard, &group, move |c| async move {
                        c.sync_group(req, v).await
                    })
                    .await;
                    respond(
                        ctx,
                        &resp.unwrap_or_else(|| {
                            SyncGroupResponse::default().with_error_code(NO_COORDINATOR_YET)
                        }),
                    )
                }
                None => Reply::Close,
            }
        }
        ApiKey::Heartbeat => match decode::<HeartbeatRequest>(&mut body, v) {
            Some(req) => {
                let group = req.group_id.0.to_string();
                let resp =
                    on_coordinator(
                        shard,
                        &group,
                        move |c| async move { c.heartbeat(req, v).await },
                    )
                    .await;
                respond(
                    ctx,
                    &resp.unwrap_or_else(|| {
                        HeartbeatResponse::default().with_error_code(NO_COORDINATOR_YET)
                    }),
                )
            }
            None => Reply::Close,
        },
        ApiKey::LeaveGroup => match decode::<LeaveGroupRequest>(&mut body, v) {
            Some(req) => {
                let group = req.group_id.0.to_string();
                let resp = on_coordinator(shard, &group, move |c| async move {
                    c.leave_group(req, v).await
                })
                .await;
                respond(
                    ctx,
                    &resp.unwrap_or_else(|| {
                        LeaveGroupResponse::default().with_error_code(NO_COORDINATOR_YET)
                    }),
                )
            }
            None => Reply::Close,
        },
        ApiKey::OffsetCommit => match decode::<OffsetCommitRequest>(&mut body, v) {
            Some(req) => {
                let group = req.group_id.0.to_string();
                let fallback = commit_unavailable(&req);
                let resp = on_coordinator(shard, &group, move |c| async move {
                    c.offset_commit(req, v).await
                })
                .await;
                respond(ctx, &resp.unwrap_or(fallback))
            }
            None => Reply::Close,
        },
        ApiKey::OffsetFetch => match decode::<OffsetFetchRequest>(&mut body, v) {
            Some(req) => respond(ctx, &offset_fetch(shard, req, v).await),
            None => Reply::Close,
        },
        ApiKey::OffsetDelete => match decode::<OffsetDeleteRequest>(&mut body, v) {
            Some(req) => {
                let group = req.group_id.0.to_string();
                let resp = on_coordinator(shard, &group, move |c| async move {
                    c.offset_delete(req, v).await
                })
                .await;
                respond(
                    ctx,
                    &resp.unwrap_or_else(|| {
                        OffsetDeleteResponse::default().with_error_code(NO_COORDINATOR_YET)
                    }),
                )
            }
            None => Reply::Close,
        },
        ApiKey::DescribeGroups => match decode::<DescribeGroupsRequest>(&mut body, v) {
            Some(req) => respond(ctx, &describe_groups(shard, req, v).await),
            None => Reply::Close,
        },
        ApiKey::DeleteGroups => match decode::<DeleteGroupsRequest>(&mut body, v) {
            Some(req) => respond(ctx, &delete_groups(shard, req, v).await),
            None => Reply::Close,
        },
        ApiKey::ListGroups => match decode::<ListGroupsRequest>(&mut body, v) {
            Some(req) => respond(ctx, &list_groups(shard, req, v).await),
            None => Reply::Close,
        },
        _ => Reply::Close,
    }
}

fn join_unavailable(version: i16) -> JoinGroupResponse {
    let resp = JoinGroupResponse::default().with_error_code(NO_COORDINATOR_YET);
    if version >= 7 {
        resp.with_protocol_name(None)
    } else {
        resp
    }
}

fn commit_unavailable(req: &OffsetCommitRequest) -> OffsetCommitResponse {
    let topics = req
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(NO_COORDINATOR_YET)
                })
                .collect();
            OffsetCommitResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

/// v8+ may name several groups: each is fetched on its own shard.
async fn offset_fetch(shard: &Rc<Shard>, req: OffsetFetchRequest, v: i16) -> OffsetFetchResponse {
    if v < 8 {
        let group = req.group_id.0.to_string();
        let resp = on_coordinator(shard, &group, move |c| async move {
            c.offset_fetch(req, v).await
        })
        .await;
        return resp.unwrap_or_else(|| {
            // v1 has no top-level error code; an empty answer makes the client retry.
            let r = OffsetFetchResponse::default();
            if v >= 2 {
                r.with_error_code(NO_COORDINATOR_YET)
            } else {
                r
            }
        });
    }
    let mut groups = Vec::with_capacity(req.groups.len());
    for g in req.groups {
        let id = g.group_id.clone();
        let one = OffsetFetchRequest::default()
            .with_groups(vec![g])
            .with_require_stable(req.require_stable);
        let resp = on_coordinator(
            shard,
            &id,
            move |c| async move { c.offset_fetch(one, v).await },
        )
        .await;
        match resp.and_then(|r| r.groups.into_iter().next()) {
            Some(group) => groups.push(group),
            None => groups.push(
                OffsetFetchResponseGroup::default()
                    .with_group_id(id)
                    .with_error_code(NO_COORDINATOR_YET),
            ),
        }
    }
    OffsetFetchResponse::default().with_groups(groups)
}

async fn describe_groups(
    shard: &Rc<Shard>,
    req: DescribeGroupsRequest,
    v: i16,
) -> DescribeGroupsResponse {
    let mut out = Vec::with_capacity(req.groups.len());
    for id in req.groups {
        let one = DescribeGroupsRequest::default()
            .with_groups(vec![id.clone()])
            .with_include_authorized_operations(req.include_authorized_operations);
        let key = id.0.to_string();
        let resp = on_coordinator(shard, &key, move |c| async move {
            c.describe_groups(one, v).await
        })
        .await;
        match resp.and_then(|r| r.groups.into_iter().next()) {
            Some(g) => out.push(g),
            None => out.push(
                DescribedGroup::default()
                    .with_group_id(id)
                    .with_error_code(NO_COORDINATOR_YET),
            ),
        }
    }
    DescribeGroupsResponse::default().with_groups(out)
}

async fn delete_groups(
    shard: &Rc<Shard>,
    req: DeleteGroupsRequest,
    v: i16,
) -> DeleteGroupsResponse {
    let mut out = Vec::with_capacity(req.groups_names.len());
    for id in req.groups_names {
        let one = DeleteGroupsRequest::default().with_groups_names(vec![id.clone()]);
        let key = id.0.to_string();
        let resp = on_coordinator(shard, &key, move |c| async move {
            c.delete_groups(one, v).await
        })
        .await;
        match resp.and_then(|r| r.results.into_iter().next()) {
            Some(r) => out.push(r),
            None => out.push(
                DeletableGroupResult::default()
                    .with_group_id(id)
                    .with_error_code(NO_COORDINATOR_YET),
            ),
        }
    }
    DeleteGroupsResponse::default().with_results(out)
}

/// Every shard's groups, merged.
async fn list_groups(shard: &Rc<Shard>, req: ListGroupsRequest, v: i16) -> ListGroupsResponse {
    let mut out = ListGroupsResponse::default();
    for target in 0..shard.shards {
        let one = req.clone();
        let resp = shard
            .run_on(target, move |_| async move {
                match local() {
                    Some(c) => Some(c.list_groups(one, v).await),
                    None => None,
                }
            })
            .await
            .ok()
            .flatten();
        match resp {
            Some(r) => {
                if r.error_code != 0 && out.error_code == 0 {
                    out.error_code = r.error_code;
                }
                out.groups.extend(r.groups);
            }
            None => out.error_code = NO_COORDINATOR_YET,
        }
    }
    out.groups
        .sort_by(|a, b| a.group_id.0.as_str().cmp(b.group_id.0.as_str()));
    out
}
