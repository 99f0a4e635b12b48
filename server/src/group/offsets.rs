//! Committed offsets and the group admin APIs: OffsetCommit, OffsetFetch,
//! OffsetDelete, DeleteGroups, ListGroups, DescribeGroups, and the replay of
//! a `__consumer_offsets` partition when this coordinator starts answering
//! for it (at start on one node; in a cluster when this node is elected
//! its leader).
//!
//! Every change is appended to the group's `__consumer_offsets` partition
//! (synced, and in a cluster replicated to its in-sync replicas) before it
//! is applied in memory and answered, so what a client was told is what a
//! restart, or the next leader, rebuilds.

use std::collections::{BTreeMap, HashMap};

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest, DescribeGroupsResponse,
    GroupId, ListGroupsRequest, ListGroupsResponse, OffsetCommitRequest, OffsetCommitResponse,
    OffsetDeleteRequest, OffsetDeleteResponse, OffsetFetchRequest, OffsetFetchResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use strom_engine::{Durability, EngineError, PartitionLog};

use super::codes::*;
use super::coordinator::{check_member, GroupCoordinator, PendingLoad, SINGLE_NODE_EPOCH};
use super::placement::{offsets_partition_for, OFFSETS_TOPIC};
use super::records::{self, OffsetKey, OffsetRecord, OffsetValue};
use super::state::{Committed, Group, GroupState};

/// Bytes read from `__consumer_offsets` per step of the replay.
const LOAD_READ_BYTES: usize = 1 << 20;

/// (topic, [(partition, committed offset if any)]) as OffsetFetch answers.
type FetchedTopics = Vec<(String, Vec<(i32, Option<Committed>)>)>;

/// A change to append: key, value (None = tombstone).
type RecordPair = (Vec<u8>, Option<Vec<u8>>);

impl GroupCoordinator {
    // ---- load ---------------------------------------------------------

    /// Answers for every owned `__consumer_offsets` partition (one node):
    /// replays each, then starts answering.
    pub async fn load(&self) -> Result<(), EngineError> {
        let loads: Vec<PendingLoad> = self
            .partitions()
            .into_iter()
            .map(|p| self.start_load(p, SINGLE_NODE_EPOCH))
            .collect();
        for pending in loads {
            self.load_partition(pending).await?;
        }
        self.inner.loaded.set(true);
        Ok(())
    }

    /// Starts answering with no partition loaded: in a cluster, partitions
    /// are loaded as this node is elected their leader ([`Self::on_leadership`]).
    pub fn start_unloaded(&self) {
        self.inner.loaded.set(true);
    }

    /// Replays one `__consumer_offsets` partition up to its log end (as
    /// Kafka loads a newly led partition: what the old leader replicated
    /// here and the in-sync replicas hold) into the groups in memory,
    /// unless the load was overtaken meanwhile. On failure the partition is
    /// not coordinated here: the next leadership change tries again.
    pub async fn load_partition(&self, pending: PendingLoad) -> Result<(), EngineError> {
        let PendingLoad { partition, load } = pending;
        let Some(log) = self.inner.logs.get(&partition).cloned() else {
            return Ok(());
        };
        let mut scratch = HashMap::new();
        let replayed = self.replay(partition, &log, &mut scratch).await;
        let current = self.coordinated(partition).filter(|c| c.load == load);
        if current.is_none() {
            return Ok(());
        }
        let records = match replayed {
            Ok(records) => records,
            Err(e) => {
                self.inner.coordinated.borrow_mut().remove(&partition);
                return Err(e);
            }
        };
        // Groups without members whose offsets were all deleted are gone;
        // offsets rebuilt from the log expire from their commit time.
        scratch.retain(|_, g: &mut Group| !g.offsets.is_empty() || !g.members.is_empty());
        for group in scratch.values_mut() {
            group.empty_since_ms = None;
        }
        let groups = scratch.len();
        // Nothing of this partition is in memory (loading refuses every
        // request for it), so the replayed groups go in whole.
        self.drop_groups_of(partition);
        self.inner.groups.borrow_mut().extend(scratch);
        if let Some(c) = self.inner.coordinated.borrow_mut().get_mut(&partition) {
            c.loaded = true;
        }
        tracing::info!(
            partition,
            records,
            groups,
            "loaded __consumer_offsets partition"
        );
        Ok(())
    }

    /// Applies every offset record of `log` to `groups`; returns how many.
    async fn replay(
        &self,
        partition: i32,
        log: &PartitionLog,
        groups: &mut HashMap<String, Group>,
    ) -> Result<usize, EngineError> {
        let now = self.now();
        let n = self.inner.config.offsets_topic_num_partitions;
        let end = log.log_end_offset();
        let mut offset = log.log_start_offset();
        let mut loaded = 0usize;
        while offset < end {
            let read = log.read_to_end(offset, LOAD_READ_BYTES).await?;
            let mut recs = Vec::new();
            let next = records::parse_batches(&read.batches, offset, &mut recs).map_err(|e| {
                EngineError::Corrupt(format!("{OFFSETS_TOPIC}-{partition} at {offset}: {e}"))
            })?;
            if next <= offset {
                break;
            }
            offset = next;
            for rec in recs {
                let group_id = match &rec {
                    OffsetRecord::Offset { key, .. } => &key.group,
                    OffsetRecord::Group { group, .. } => group,
                    OffsetRecord::Other => continue,
                };
                if offsets_partition_for(group_id, n) != partition {
                    tracing::warn!(group = %group_id, partition, "record in the wrong partition, skipped");
                    continue;
                }
                loaded = loaded.saturating_add(1);
                match rec {
                    OffsetRecord::Offset {
                        key,
                        value,
                        log_offset,
                    } => apply_record(groups, key, value, log_offset, now),
                    OffsetRecord::Group { group, value, .. } => groups
                        .entry(group.clone())
                        .or_insert_with(|| Group::new(&group, now))
                        .apply_value(value, now),
                    OffsetRecord::Other => {}
                }
            }
        }
        Ok(loaded)
    }

    /// Appends `records` to the group's partition and waits until they are
    /// replicated. NOT_COORDINATOR when the partition was unloaded (or
    /// loaded again) meanwhile: the caller must not apply them in memory.
    pub(super) async fn append(
        &self,
        group_id: &str,
        records: &[RecordPair],
        now: i64,
    ) -> Result<i64, i16> {
        let p = self.partition_of(group_id);
        let Some(load) = self.coordinated(p).filter(|c| c.loaded).map(|c| c.load) else {
            return Err(NOT_COORDINATOR);
        };
        let Some(log) = self.inner.logs.get(&p).cloned() else {
            return Err(NOT_COORDINATOR);
        };
        let bytes = records::build_batches(records, now);
        let info = match log.append(&bytes, Durability::Synced, now).await {
            Ok(info) => info,
            Err(e) => {
                tracing::error!(group = group_id, error = %e, "append to __consumer_offsets failed");
                return Err(match e {
                    EngineError::Batch(_) => INVALID_COMMIT_OFFSET_SIZE,
                    EngineError::Closed => NOT_COORDINATOR,
                    EngineError::NoSpace | EngineError::Io(_) => KAFKA_STORAGE_ERROR,
                    _ => UNKNOWN_SERVER_ERROR,
                });
            }
        };
        debug_assert_eq!(
            info.last_offset.saturating_sub(info.base_offset),
            (records.len() as i64).saturating_sub(1)
        );
        self.inner
            .topics
            .wait_replicated(p, &log, info.last_offset.saturating_add(1))
            .await?;
        if self.coordinated(p).map(|c| c.load) != Some(load) {
            return Err(NOT_COORDINATOR);
        }
        Ok(info.base_offset)
    }

    // ---- OffsetCommit -------------------------------------------------

    pub async fn offset_commit(
        &self,
        req: OffsetCommitRequest,
        version: i16,
    ) -> OffsetCommitResponse {
        let group_id = req.group_id.0.to_string();
        let now = self.now();
        let instance_id = if version >= 7 {
            req.group_instance_id.as_deref()
        } else {
            None
        };
        let status = self.check_group(&group_id, false).and_then(|_| {
            self.validate_commit(
                &group_id,
                req.generation_id_or_member_epoch,
                &req.member_id,
                instance_id,
                now,
            )
        });
        let max_metadata = self.inner.config.offset_metadata_max_bytes;
        let mut errors: Vec<Vec<i16>> = Vec::with_capacity(req.topics.len());
        let mut pending: Vec<(usize, usize, OffsetKey, OffsetValue)> = Vec::new();
        for (ti, topic) in req.topics.iter().enumerate() {
            let mut row = Vec::with_capacity(topic.partitions.len());
            for (pi, p) in topic.partitions.iter().enumerate() {
                let metadata = p.committed_metadata.as_deref().unwrap_or("");
                let error = match status {
                    Err(e) => e,
                    Ok(())
                        if !self
                            .inner
                            .topics
                            .partition_exists(&topic.name, p.partition_index) =>
                    {
                        UNKNOWN_TOPIC_OR_PARTITION
                    }
                    Ok(()) if metadata.len() > max_metadata => OFFSET_METADATA_TOO_LARGE,
                    Ok(()) => {
                        let key = OffsetKey {
                            group: group_id.clone(),
                            topic: topic.name.to_string(),
                            partition: p.partition_index,
                        };
                        let value = OffsetValue {
                            offset: p.committed_offset,
                            leader_epoch: if version >= 6 {
                                p.committed_leader_epoch
                            } else {
                                -1
                            },
                            metadata: metadata.to_string(),
                            commit_timestamp_ms: now,
                        };
                        pending.push((ti, pi, key, value));
                        NONE
                    }
                };
                row.push(error);
            }
            errors.push(row);
        }
        if !pending.is_empty() {
            let recs: Vec<RecordPair> = pending
                .iter()
                .map(|(_, _, k, v)| (records::encode_key(k), Some(records::encode_value(v))))
                .collect();
            match self.append(&group_id, &recs, now).await {
                Ok(base) => {
                    let mut groups = self.inner.groups.borrow_mut();
                    for (i, (_, _, key, value)) in pending.into_iter().enumerate() {
                        apply_record(
                            &mut groups,
                            key,
                            Some(value),
                            base.saturating_add(i as i64),
                            now,
                        );
                    }
                }
                Err(e) => {
                    for (ti, pi, _, _) in pending {
                        if let Some(slot) = errors.get_mut(ti).and_then(|row| row.get_mut(pi)) {
                            *slot = e;
                        }
                    }
                }
            }
        }
        let topics = req
            .topics
            .iter()
            .zip(errors)
            .map(|(t, row)| {
                let partitions = t
                    .partitions
                    .iter()
                    .zip(row)
                    .map(|(p, e)| {
                        OffsetCommitResponsePartition::default()
                            .with_partition_index(p.partition_index)
                            .with_error_code(e)
                    })
                    .collect();
                OffsetCommitResponseTopic::default()
                    .with_name(t.name.clone())
                    .with_partitions(partitions)
            })
            .collect();
        OffsetCommitResponse::default().with_topics(topics)
    }

    /// Kafka's rules for who may commit: a generation below 0 is a
    /// standalone consumer, allowed while the group has no members; anyone
    /// else must be a current member of the current generation.
    fn validate_commit(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        now: i64,
    ) -> Result<(), i16> {
        let mut groups = self.inner.groups.borrow_mut();
        let Some(group) = groups.get_mut(group_id) else {
            if generation < 0 {
                groups.insert(group_id.to_string(), Group::new(group_id, now));
                return Ok(());
            }
            return Err(ILLEGAL_GENERATION);
        };
        if generation < 0 && group.state == GroupState::Empty {
            return Ok(());
        }
        check_member(group, member_id, instance_id, generation)?;
        match group.state {
            GroupState::CompletingRebalance => Err(REBALANCE_IN_PROGRESS),
            GroupState::Empty => Err(UNKNOWN_MEMBER_ID),
            GroupState::Dead => Err(COORDINATOR_NOT_AVAILABLE),
            GroupState::Stable | GroupState::PreparingRebalance => {
                if let Some(m) = group.members.get_mut(member_id) {
                    m.last_heartbeat_ms = now;
                }
                Ok(())
            }
        }
    }

    // ---- OffsetFetch --------------------------------------------------

    pub async fn offset_fetch(&self, req: OffsetFetchRequest, version: i16) -> OffsetFetchResponse {
        if version >= 8 {
            let groups = req
                .groups
                .iter()
                .map(|g| {
                    let wanted = g.topics.as_ref().map(|ts| {
                        ts.iter()
                            .map(|t| (t.name.to_string(), t.partition_indexes.clone()))
                            .collect::<Vec<_>>()
                    });
                    let (error, topics) = self.fetch_group(&g.group_id, wanted);
                    let topics = topics
                        .into_iter()
                        .map(|(name, parts)| {
                            let partitions = parts
                                .into_iter()
                                .map(|(p, c)| {
                                    let c = committed_or_none(c);
                                    OffsetFetchResponsePartitions::default()
                                        .with_partition_index(p)
                                        .with_committed_offset(c.offset)
                                        .with_committed_leader_epoch(c.leader_epoch)
                                        .with_metadata(Some(StrBytes::from_string(c.metadata)))
                                })
                                .collect();
                            OffsetFetchResponseTopics::default()
                                .with_name(TopicName(StrBytes::from_string(name)))
                                .with_partitions(partitions)
                        })
                        .collect();
                    OffsetFetchResponseGroup::default()
                        .with_group_id(g.group_id.clone())
                        .with_topics(topics)
                        .with_error_code(error)
                })
                .collect();
            return OffsetFetchResponse::default().with_groups(groups);
        }
        let wanted = req.topics.as_ref().map(|ts| {
            ts.iter()
                .map(|t| (t.name.to_string(), t.partition_indexes.clone()))
                .collect::<Vec<_>>()
        });
        let (error, mut topics) = self.fetch_group(&req.group_id, wanted.clone());
        // v1 has no top-level error: the error goes into every partition.
        let partition_error = if version < 2 { error } else { NONE };
        if error != NONE && version < 2 {
            topics = wanted
                .unwrap_or_default()
                .into_iter()
                .map(|(t, ps)| (t, ps.into_iter().map(|p| (p, None)).collect()))
                .collect();
        }
        let topics = topics
            .into_iter()
            .map(|(name, parts)| {
                let partitions = parts
                    .into_iter()
                    .map(|(p, c)| {
                        let c = committed_or_none(c);
                        OffsetFetchResponsePartition::default()
                            .with_partition_index(p)
                            .with_committed_offset(c.offset)
                            .with_committed_leader_epoch(c.leader_epoch)
                            .with_metadata(Some(StrBytes::from_string(c.metadata)))
                            .with_error_code(partition_error)
                    })
                    .collect();
                OffsetFetchResponseTopic::default()
                    .with_name(TopicName(StrBytes::from_string(name)))
                    .with_partitions(partitions)
            })
            .collect();
        OffsetFetchResponse::default()
            .with_topics(topics)
            .with_error_code(if version >= 2 { error } else { NONE })
    }

    /// The committed offsets of `wanted` (all of the group's when `None`).
    fn fetch_group(
        &self,
        group_id: &str,
        wanted: Option<Vec<(String, Vec<i32>)>>,
    ) -> (i16, FetchedTopics) {
        if let Err(e) = self.check_group(group_id, false) {
            return (e, Vec::new());
        }
        let groups = self.inner.groups.borrow();
        let group = groups.get(group_id);
        let lookup =
            |t: &str, p: i32| group.and_then(|g| g.offsets.get(&(t.to_string(), p)).cloned());
        let topics = match wanted {
            Some(wanted) => wanted
                .into_iter()
                .map(|(t, ps)| {
                    let parts = ps.into_iter().map(|p| (p, lookup(&t, p))).collect();
                    (t, parts)
                })
                .collect(),
            None => {
                let mut by_topic: BTreeMap<String, Vec<(i32, Option<Committed>)>> = BTreeMap::new();
                for ((t, p), c) in group.map(|g| g.offsets.iter()).into_iter().flatten() {
                    by_topic
                        .entry(t.clone())
                        .or_default()
                        .push((*p, Some(c.clone())));
                }
                by_topic.into_iter().collect()
            }
        };
        (NONE, topics)
    }

    // ---- OffsetDelete -------------------------------------------------

    pub async fn offset_delete(
        &self,
        req: OffsetDeleteRequest,
        _version: i16,
    ) -> OffsetDeleteResponse {
        let group_id = req.group_id.0.to_string();
        let now = self.now();
        let fail = |e: i16| OffsetDeleteResponse::default().with_error_code(e);
        if let Err(e) = self.check_group(&group_id, true) {
            return fail(e);
        }
        let mut errors: Vec<Vec<i16>> = Vec::new();
        let mut doomed: Vec<(String, i32)> = Vec::new();
        {
            let groups = self.inner.groups.borrow();
            let Some(group) = groups.get(&group_id) else {
                return fail(GROUP_ID_NOT_FOUND);
            };
            let subscribed = if group.state == GroupState::Empty {
                Some(Vec::new())
            } else {
                group.subscribed_topics()
            };
            let Some(subscribed) = subscribed else {
                return fail(NON_EMPTY_GROUP);
            };
            for t in &req.topics {
                let mut row = Vec::new();
                for p in &t.partitions {
                    let error = if !self
                        .inner
                        .topics
                        .partition_exists(&t.name, p.partition_index)
                    {
                        UNKNOWN_TOPIC_OR_PARTITION
                    } else if subscribed.iter().any(|s| s == t.name.as_str()) {
                        GROUP_SUBSCRIBED_TO_TOPIC
                    } else {
                        if group
                            .offsets
                            .contains_key(&(t.name.to_string(), p.partition_index))
                        {
                            doomed.push((t.name.to_string(), p.partition_index));
                        }
                        NONE
                    };
                    row.push(error);
                }
                errors.push(row);
            }
        }
        if let Err(e) = self.delete_offsets(&group_id, doomed, now).await {
            for row in errors.iter_mut() {
                for err in row.iter_mut().filter(|e| **e == NONE) {
                    *err = e;
                }
            }
        }
        let topics = req
            .topics
            .iter()
            .zip(errors)
            .map(|(t, row)| {
                let partitions = t
                    .partitions
                    .iter()
                    .zip(row)
                    .map(|(p, e)| {
                        OffsetDeleteResponsePartition::default()
                            .with_partition_index(p.partition_index)
                            .with_error_code(e)
                    })
                    .collect();
                OffsetDeleteResponseTopic::default()
                    .with_name(t.name.clone())
                    .with_partitions(partitions)
            })
            .collect();
        OffsetDeleteResponse::default().with_topics(topics)
    }

    /// Writes tombstones for `doomed` and then forgets them.
    async fn delete_offsets(
        &self,
        group_id: &str,
        doomed: Vec<(String, i32)>,
        now: i64,
    ) -> Result<(), i16> {
        if doomed.is_empty() {
            return Ok(());
        }
        let recs: Vec<RecordPair> = doomed
            .iter()
            .map(|(t, p)| {
                let key = OffsetKey {
                    group: group_id.to_string(),
                    topic: t.clone(),
                    partition: *p,
                };
                (records::encode_key(&key), None)
            })
            .collect();
        let base = self.append(group_id, &recs, now).await?;
        let mut groups = self.inner.groups.borrow_mut();
        for (i, (topic, partition)) in doomed.into_iter().enumerate() {
            let key = OffsetKey {
                group: group_id.to_string(),
                topic,
                partition,
            };
            apply_record(&mut groups, key, None, base.saturating_add(i as i64), now);
        }
        Ok(())
    }

    // ---- DeleteGroups -------------------------------------------------

    pub async fn delete_groups(
        &self,
        req: DeleteGroupsRequest,
        _version: i16,
    ) -> DeleteGroupsResponse {
        let names: Vec<&str> = req.groups_names.iter().map(|g| g.0.as_str()).collect();
        self.apply_deadlines(Some(&names));
        let mut results = Vec::with_capacity(req.groups_names.len());
        for name in &req.groups_names {
            let error = self.delete_group(name.0.as_str()).await;
            results.push(
                DeletableGroupResult::default()
                    .with_group_id(name.clone())
                    .with_error_code(error),
            );
        }
        DeleteGroupsResponse::default().with_results(results)
    }

    async fn delete_group(&self, group_id: &str) -> i16 {
        if let Err(e) = self.check_group(group_id, true) {
            return e;
        }
        let now = self.now();
        let doomed: Vec<(String, i32)> = {
            let groups = self.inner.groups.borrow();
            let Some(group) = groups.get(group_id) else {
                return GROUP_ID_NOT_FOUND;
            };
            if group.state != GroupState::Empty || !group.members.is_empty() {
                return NON_EMPTY_GROUP;
            }
            group.offsets.keys().cloned().collect()
        };
        if let Err(e) = self.delete_offsets(group_id, doomed, now).await {
            return e;
        }
        // The group's metadata goes too, or the next coordinator would
        // load its last generation back.
        let tombstone = (records::encode_group_key(group_id), None);
        if let Err(e) = self.append(group_id, &[tombstone], now).await {
            return e;
        }
        let mut groups = self.inner.groups.borrow_mut();
        if groups
            .get(group_id)
            .is_some_and(|g| g.state == GroupState::Empty && g.offsets.is_empty())
        {
            groups.remove(group_id);
        }
        tracing::info!(group = group_id, "group deleted");
        NONE
    }

    // ---- ListGroups / DescribeGroups ----------------------------------

    /// The groups of this shard. The broker merges the answers of all shards.
    pub async fn list_groups(&self, req: ListGroupsRequest, version: i16) -> ListGroupsResponse {
        if !self.inner.loaded.get() {
            return ListGroupsResponse::default().with_error_code(COORDINATOR_LOAD_IN_PROGRESS);
        }
        let states: Vec<String> = req.states_filter.iter().map(|s| s.to_lowercase()).collect();
        let types: Vec<String> = req.types_filter.iter().map(|s| s.to_lowercase()).collect();
        if !types.is_empty() && !types.iter().any(|t| t == "classic") {
            return ListGroupsResponse::default();
        }
        self.apply_deadlines(None);
        let groups = self.inner.groups.borrow();
        let mut listed: Vec<ListedGroup> = groups
            .values()
            .filter(|g| states.is_empty() || states.contains(&g.state.name().to_lowercase()))
            .map(|g| {
                let mut l = ListedGroup::default()
                    .with_group_id(GroupId(StrBytes::from_string(g.id.clone())))
                    .with_protocol_type(StrBytes::from_string(
                        g.protocol_type.clone().unwrap_or_default(),
                    ));
                if version >= 4 {
                    l = l.with_group_state(StrBytes::from_static_str(g.state.name()));
                }
                if version >= 5 {
                    l = l.with_group_type(StrBytes::from_static_str("classic"));
                }
                l
            })
            .collect();
        listed.sort_by(|a, b| a.group_id.0.as_str().cmp(b.group_id.0.as_str()));
        ListGroupsResponse::default().with_groups(listed)
    }

    pub async fn describe_groups(
        &self,
        req: DescribeGroupsRequest,
        version: i16,
    ) -> DescribeGroupsResponse {
        let names: Vec<&str> = req.groups.iter().map(|g| g.0.as_str()).collect();
        self.apply_deadlines(Some(&names));
        let groups = req
            .groups
            .iter()
            .map(|id| self.describe_group(id, version))
            .collect();
        DescribeGroupsResponse::default().with_groups(groups)
    }

    fn describe_group(&self, id: &GroupId, version: i16) -> DescribedGroup {
        let out = DescribedGroup::default().with_group_id(id.clone());
        if let Err(e) = self.check_group(id.0.as_str(), false) {
            return out.with_error_code(e);
        }
        let groups = self.inner.groups.borrow();
        let Some(group) = groups.get(id.0.as_str()) else {
            // Before v6 an unknown group is described as Dead, without error.
            let out = out.with_group_state(StrBytes::from_static_str("Dead"));
            return if version >= 6 {
                out.with_error_code(GROUP_ID_NOT_FOUND)
            } else {
                out
            };
        };
        let stable = group.state == GroupState::Stable;
        let protocol = if stable {
            group.protocol_name.clone().unwrap_or_default()
        } else {
            String::new()
        };
        let members = group
            .members
            .values()
            .map(|m| {
                let mut d = DescribedGroupMember::default()
                    .with_member_id(StrBytes::from_string(m.id.clone()))
                    .with_client_id(StrBytes::from_string(m.client_id.clone()))
                    .with_client_host(StrBytes::from_string(m.client_host.clone()));
                if version >= 4 {
                    d = d.with_group_instance_id(m.instance_id.clone().map(StrBytes::from_string));
                }
                if stable {
                    d = d
                        .with_member_metadata(m.metadata_for(&protocol))
                        .with_member_assignment(m.assignment.clone());
                }
                d
            })
            .collect();
        out.with_group_state(StrBytes::from_static_str(group.state.name()))
            .with_protocol_type(StrBytes::from_string(
                group.protocol_type.clone().unwrap_or_default(),
            ))
            .with_protocol_data(StrBytes::from_string(protocol))
            .with_members(members)
    }

    // ---- retention ----------------------------------------------------

    /// Offsets of groups without members expire `offsets.retention.minutes`
    /// after the later of the commit and the group becoming empty.
    pub(super) async fn expire_offsets(&self, now: i64) {
        let retention = self.inner.config.offsets_retention_ms;
        let expired: HashMap<String, Vec<(String, i32)>> = {
            let groups = self.inner.groups.borrow();
            groups
                .values()
                .filter(|g| g.state == GroupState::Empty && g.members.is_empty())
                .map(|g| {
                    let doomed: Vec<(String, i32)> = g
                        .offsets
                        .iter()
                        .filter(|(_, c)| {
                            let since = g
                                .empty_since_ms
                                .map_or(c.commit_timestamp_ms, |e| e.max(c.commit_timestamp_ms));
                            now >= since.saturating_add(retention)
                        })
                        .map(|(k, _)| k.clone())
                        .collect();
                    (g.id.clone(), doomed)
                })
                .filter(|(_, d)| !d.is_empty())
                .collect()
        };
        for (group_id, doomed) in expired {
            let count = doomed.len();
            match self.delete_offsets(&group_id, doomed, now).await {
                Ok(()) => tracing::info!(group = %group_id, count, "expired committed offsets"),
                Err(e) => tracing::warn!(group = %group_id, error = e, "could not expire offsets"),
            }
        }
    }
}

/// Applies one record (from the log or just appended) to the in-memory
/// state. A record older than what is held (concurrent appends completing
/// out of order) changes nothing.
fn apply_record(
    groups: &mut HashMap<String, Group>,
    key: OffsetKey,
    value: Option<OffsetValue>,
    log_offset: i64,
    now: i64,
) {
    let tp = (key.topic, key.partition);
    match value {
        Some(v) => {
            let group = groups
                .entry(key.group.clone())
                .or_insert_with(|| Group::new(&key.group, now));
            if group
                .offsets
                .get(&tp)
                .is_some_and(|c| c.log_offset > log_offset)
            {
                return;
            }
            group.offsets.insert(
                tp,
                Committed {
                    offset: v.offset,
                    leader_epoch: v.leader_epoch,
                    metadata: v.metadata,
                    commit_timestamp_ms: v.commit_timestamp_ms,
                    log_offset,
                },
            );
        }
        None => {
            if let Some(group) = groups.get_mut(&key.group) {
                if group
                    .offsets
                    .get(&tp)
                    .is_some_and(|c| c.log_offset < log_offset)
                {
                    group.offsets.remove(&tp);
                }
            }
        }
    }
}

/// Kafka's answer for a partition without a committed offset.
fn committed_or_none(c: Option<Committed>) -> Committed {
    c.unwrap_or(Committed {
        offset: -1,
        leader_epoch: -1,
        metadata: String::new(),
        commit_timestamp_ms: -1,
        log_offset: -1,
    })
}
