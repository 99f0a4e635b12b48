//! The group APIs (FindCoordinator, JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup, OffsetCommit, OffsetFetch, OffsetDelete, DescribeGroups,
//! DeleteGroups, ListGroups): decoded on the connection's shard and run on
//! the coordinator shard of each group (`crate::coordinators`); requests
//! naming several groups are split per group, ListGroups asks every shard.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::DescribedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::OffsetFetchResponseGroup;
use kafka_protocol::messages::*;

use crate::coordinators::{local, on_coordinator};
use crate::group::codes::COORDINATOR_LOAD_IN_PROGRESS;
use crate::group::{find_coordinator_with, offsets_partition_for, ClientInfo, CoordinatorNode};
use crate::shard::Shard;
use crate::wire::{decode, respond, Reply, RequestContext};

/// The answer when the coordinator shard has no loaded coordinator (it is
/// still starting, or stopping): retriable for every client, where
/// NO_COORDINATOR_YET makes librdkafka's `committed()` give up.
const NO_COORDINATOR_YET: i16 = COORDINATOR_LOAD_IN_PROGRESS;

/// Handles every group API; `api::dispatch` routes them here.
pub async fn dispatch(shard: &Rc<Shard>, ctx: &RequestContext, mut body: Bytes) -> Reply {
    let v = ctx.version;
    match ctx.api_key {
        ApiKey::FindCoordinator => match decode::<FindCoordinatorRequest>(&mut body, v) {
            Some(req) => respond(ctx, &find_coordinator_here(shard, &req, v)),
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
                respond(ctx, &resp.unwrap_or_else(|code| join_unavailable(v, code)))
            }
            None => Reply::Close,
        },
        ApiKey::SyncGroup => match decode::<SyncGroupRequest>(&mut body, v) {
            Some(req) => {
                let group = req.group_id.0.to_string();
                let resp =
                    on_coordinator(
                        shard,
                        &group,
                        move |c| async move { c.sync_group(req, v).await },
                    )
                    .await;
                respond(
                    ctx,
                    &resp.unwrap_or_else(|code| SyncGroupResponse::default().with_error_code(code)),
                )
            }
            None => Reply::Close,
        },
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
                    &resp.unwrap_or_else(|code| HeartbeatResponse::default().with_error_code(code)),
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
                    &resp
                        .unwrap_or_else(|code| LeaveGroupResponse::default().with_error_code(code)),
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
                respond(ctx, &resp.unwrap_or_else(fallback))
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
                    &resp.unwrap_or_else(|code| {
                        OffsetDeleteResponse::default().with_error_code(code)
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

/// FindCoordinator: this node for every group on one node; in a cluster
/// the leader of the group's `__consumer_offsets` partition, which is
/// created (placed across the brokers) by the first FindCoordinator.
fn find_coordinator_here(
    shard: &Shard,
    req: &FindCoordinatorRequest,
    v: i16,
) -> FindCoordinatorResponse {
    let meta = shard.metadata();
    let partitions = shard.config.groups.offsets_topic_num_partitions;
    crate::cluster::ensure_offsets_topic(
        &meta,
        partitions,
        shard.config.offsets_topic_replication_factor,
        crate::clock::now_ms(),
    );
    let (host, port) = shard.config.advertised();
    let here = CoordinatorNode {
        node_id: shard.config.node_id,
        host,
        port,
    };
    let resolve = |group: &str| {
        let p = offsets_partition_for(group, partitions);
        match crate::cluster::offsets_coordinator(&meta, p)? {
            None => Ok(here.clone()),
            Some((node_id, host, port)) => Ok(CoordinatorNode {
                node_id,
                host,
                port,
            }),
        }
    };
    find_coordinator_with(req, v, &resolve)
}

fn join_unavailable(version: i16, code: i16) -> JoinGroupResponse {
    let resp = JoinGroupResponse::default().with_error_code(code);
    if version >= 7 {
        resp.with_protocol_name(None)
    } else {
        resp
    }
}

/// The answer to a commit that reached no coordinator, given the code.
fn commit_unavailable(req: &OffsetCommitRequest) -> impl FnOnce(i16) -> OffsetCommitResponse {
    let shape: Vec<(TopicName, Vec<i32>)> = req
        .topics
        .iter()
        .map(|t| {
            (
                t.name.clone(),
                t.partitions.iter().map(|p| p.partition_index).collect(),
            )
        })
        .collect();
    move |code| {
        let topics = shape
            .into_iter()
            .map(|(name, partitions)| {
                let partitions = partitions
                    .into_iter()
                    .map(|p| {
                        OffsetCommitResponsePartition::default()
                            .with_partition_index(p)
                            .with_error_code(code)
                    })
                    .collect();
                OffsetCommitResponseTopic::default()
                    .with_name(name)
                    .with_partitions(partitions)
            })
            .collect();
        OffsetCommitResponse::default().with_topics(topics)
    }
}

/// v8+ may name several groups: each is fetched on its own shard.
async fn offset_fetch(shard: &Rc<Shard>, req: OffsetFetchRequest, v: i16) -> OffsetFetchResponse {
    if v < 8 {
        let group = req.group_id.0.to_string();
        let resp = on_coordinator(shard, &group, move |c| async move {
            c.offset_fetch(req, v).await
        })
        .await;
        return resp.unwrap_or_else(|code| {
            // v1 has no top-level error code; an empty answer makes the client retry.
            let r = OffsetFetchResponse::default();
            if v >= 2 {
                r.with_error_code(code)
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
        match resp.map(|r| r.groups.into_iter().next()) {
            Ok(Some(group)) => groups.push(group),
            Ok(None) => groups.push(no_group(id, NO_COORDINATOR_YET)),
            Err(code) => groups.push(no_group(id, code)),
        }
    }
    OffsetFetchResponse::default().with_groups(groups)
}

fn no_group(id: GroupId, code: i16) -> OffsetFetchResponseGroup {
    OffsetFetchResponseGroup::default()
        .with_group_id(id)
        .with_error_code(code)
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
        let code = match resp.map(|r| r.groups.into_iter().next()) {
            Ok(Some(g)) => {
                out.push(g);
                continue;
            }
            Ok(None) => NO_COORDINATOR_YET,
            Err(code) => code,
        };
        out.push(
            DescribedGroup::default()
                .with_group_id(id)
                .with_error_code(code),
        );
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
        let code = match resp.map(|r| r.results.into_iter().next()) {
            Ok(Some(r)) => {
                out.push(r);
                continue;
            }
            Ok(None) => NO_COORDINATOR_YET,
            Err(code) => code,
        };
        out.push(
            DeletableGroupResult::default()
                .with_group_id(id)
                .with_error_code(code),
        );
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

#[cfg(test)]
mod tests {
    use crate::group::SUPPORTED_VERSIONS;

    #[test]
    fn advertised_versions_match_the_broker_table() {
        for (key, lo, hi) in SUPPORTED_VERSIONS {
            let api = kafka_protocol::messages::ApiKey::try_from(*key).unwrap();
            assert_eq!(
                crate::api::api_versions::supported_range(api),
                Some((*lo, *hi)),
                "{api:?}"
            );
        }
    }
}
