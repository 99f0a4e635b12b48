//! The group coordinator of one shard: membership (SyncGroup, Heartbeat,
//! LeaveGroup; JoinGroup is in `join.rs`) and the timers that expire
//! sessions and end rebalances. Offsets are in `offsets.rs`.
//!
//! A JoinGroup or SyncGroup that must wait for the rest of the group parks a
//! one-slot channel in its member; whoever completes the rebalance (another
//! member's request or the timer) answers every parked request. No `RefCell`
//! borrow lives across an `.await`: each request does its state change in
//! one synchronous step, then awaits its answer.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use glommio::channels::local_channel::{self, LocalReceiver};
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{
    HeartbeatRequest, HeartbeatResponse, LeaveGroupRequest, LeaveGroupResponse, SyncGroupRequest,
    SyncGroupResponse,
};
use kafka_protocol::protocol::StrBytes;
use strom_engine::PartitionLog;

use super::codes::*;
use super::config::{Clock, GroupConfig, TopicLookup};
use super::placement::offsets_partition_for;
use super::records;
use super::state::{Group, GroupState, JoinOutcome, SyncOutcome};

/// The coordinator of the groups whose `__consumer_offsets` partitions this
/// shard owns. Cheap to clone (a shared handle); not `Send`.
#[derive(Clone)]
pub struct GroupCoordinator {
    pub(super) inner: Rc<Inner>,
}

pub(super) struct Inner {
    pub config: GroupConfig,
    pub topics: Rc<dyn TopicLookup>,
    pub clock: Clock,
    /// The `__consumer_offsets` partitions owned here.
    pub logs: BTreeMap<i32, PartitionLog>,
    /// The partitions of `logs` this coordinator answers for, loading or
    /// loaded (Kafka's loadingPartitions and ownedPartitions). In a
    /// cluster, the ones this node leads; on one node, all of them.
    pub coordinated: RefCell<BTreeMap<i32, Coordinated>>,
    /// The number the next load gets.
    pub next_load: Cell<u64>,
    pub groups: RefCell<HashMap<String, Group>>,
    pub loaded: Cell<bool>,
    pub active: Cell<bool>,
    pub last_retention_check_ms: Cell<i64>,
}

/// One `__consumer_offsets` partition this coordinator answers for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Coordinated {
    /// The leader epoch it was loaded for: a later epoch loads it again,
    /// since another broker may have led it in between.
    pub epoch: i32,
    /// Which load this is: a load overtaken by an unload or a newer load
    /// drops what it read, and an append that outlived its load changes
    /// nothing in memory (NOT_COORDINATOR).
    pub load: u64,
    /// Replayed: its groups are in memory and requests are answered.
    /// Until then they get COORDINATOR_LOAD_IN_PROGRESS.
    pub loaded: bool,
}

/// A partition load to run ([`GroupCoordinator::load_partition`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingLoad {
    pub partition: i32,
    pub load: u64,
}

/// The leader epoch of every partition on one node.
pub(super) const SINGLE_NODE_EPOCH: i32 = 0;

/// Either an answer now or a parked request's receiver.
pub(super) enum Step<T> {
    Done(T),
    Wait(LocalReceiver<T>),
}

/// The longest group id, in bytes: offsets records store it as a Kafka
/// string with an int16 length. Flexible request versions carry compact
/// strings, which can be longer, so every group request checks it before a
/// record is encoded.
pub const MAX_GROUP_ID_BYTES: usize = i16::MAX as usize;

impl GroupCoordinator {
    /// A coordinator over the given `__consumer_offsets` partition logs.
    /// Answers COORDINATOR_LOAD_IN_PROGRESS until [`Self::load`] has run.
    pub fn new(
        config: GroupConfig,
        logs: Vec<(i32, PartitionLog)>,
        topics: Rc<dyn TopicLookup>,
        clock: Clock,
    ) -> GroupCoordinator {
        let now = clock();
        GroupCoordinator {
            inner: Rc::new(Inner {
                config,
                topics,
                clock,
                logs: logs.into_iter().collect(),
                coordinated: RefCell::new(BTreeMap::new()),
                next_load: Cell::new(0),
                groups: RefCell::new(HashMap::new()),
                loaded: Cell::new(false),
                active: Cell::new(true),
                last_retention_check_ms: Cell::new(now),
            }),
        }
    }

    pub fn config(&self) -> &GroupConfig {
        &self.inner.config
    }

    /// The `__consumer_offsets` partition of `group_id`.
    pub(super) fn partition_of(&self, group_id: &str) -> i32 {
        offsets_partition_for(group_id, self.inner.config.offsets_topic_num_partitions)
    }

    /// Whether this coordinator answers for `group_id`: its offsets
    /// partition is owned here and loaded.
    pub fn owns(&self, group_id: &str) -> bool {
        self.coordinated(self.partition_of(group_id))
            .is_some_and(|c| c.loaded)
    }

    pub(super) fn coordinated(&self, partition: i32) -> Option<Coordinated> {
        self.inner.coordinated.borrow().get(&partition).copied()
    }

    /// The `__consumer_offsets` partitions whose logs are owned here.
    pub fn partitions(&self) -> Vec<i32> {
        self.inner.logs.keys().copied().collect()
    }

    /// Kafka's onElection / onResignation for a new view of leadership:
    /// `led` maps each owned partition this node leads to its leader
    /// epoch. A partition no longer led (or led at another epoch) is
    /// unloaded at once: its groups are dropped and their parked requests
    /// answered NOT_COORDINATOR. A newly led one is marked loading
    /// (COORDINATOR_LOAD_IN_PROGRESS) and returned: the caller runs
    /// [`Self::load_partition`] for it.
    pub fn on_leadership(&self, led: &BTreeMap<i32, i32>) -> Vec<PendingLoad> {
        let held: Vec<(i32, Coordinated)> = self
            .inner
            .coordinated
            .borrow()
            .iter()
            .map(|(p, c)| (*p, *c))
            .collect();
        for (p, c) in held {
            if led.get(&p) != Some(&c.epoch) {
                self.unload_partition(p);
            }
        }
        let mut loads = Vec::new();
        for (&p, &epoch) in led {
            if !self.inner.logs.contains_key(&p) || self.coordinated(p).is_some() {
                continue;
            }
            loads.push(self.start_load(p, epoch));
        }
        loads
    }

    /// Marks `partition` loading at `epoch` under a fresh load number.
    pub(super) fn start_load(&self, partition: i32, epoch: i32) -> PendingLoad {
        let load = self.inner.next_load.get();
        self.inner.next_load.set(load.wrapping_add(1));
        self.inner.coordinated.borrow_mut().insert(
            partition,
            Coordinated {
                epoch,
                load,
                loaded: false,
            },
        );
        PendingLoad { partition, load }
    }

    /// Stops answering for `partition`: forgets its groups (members,
    /// generations, committed offsets) and answers their parked JoinGroup
    /// and SyncGroup requests NOT_COORDINATOR, so the members find the new
    /// coordinator.
    pub fn unload_partition(&self, partition: i32) {
        if self
            .inner
            .coordinated
            .borrow_mut()
            .remove(&partition)
            .is_none()
        {
            return;
        }
        let dropped = self.drop_groups_of(partition);
        tracing::info!(
            partition,
            groups = dropped,
            "no longer coordinating __consumer_offsets partition"
        );
    }

    /// Removes the groups of `partition` from memory; returns how many.
    pub(super) fn drop_groups_of(&self, partition: i32) -> usize {
        let mut dropped: Vec<Group> = {
            let mut groups = self.inner.groups.borrow_mut();
            let ids: Vec<String> = groups
                .keys()
                .filter(|id| self.partition_of(id) == partition)
                .cloned()
                .collect();
            ids.iter().filter_map(|id| groups.remove(id)).collect()
        };
        for group in &mut dropped {
            for m in group.members.values_mut() {
                let id = m.id.clone();
                m.answer_join(JoinOutcome::error(NOT_COORDINATOR, &id));
                m.answer_sync(SyncOutcome::error(NOT_COORDINATOR));
            }
        }
        dropped.len()
    }

    /// The `__consumer_offsets` partition logs owned here, for the shard's
    /// periodic log tick (flush.ms, segment.ms), like every other log.
    pub fn logs(&self) -> Vec<PartitionLog> {
        self.inner.logs.values().cloned().collect()
    }

    /// Stops answering (COORDINATOR_NOT_AVAILABLE) and ends the timer task.
    pub fn shutdown(&self) {
        self.inner.active.set(false);
    }

    /// Stops answering and closes the `__consumer_offsets` logs.
    pub async fn close(&self) {
        self.shutdown();
        for (p, log) in &self.inner.logs {
            if let Err(e) = log.close().await {
                tracing::error!(
                    partition = p,
                    "closing {} log failed: {e}",
                    super::placement::OFFSETS_TOPIC
                );
            }
        }
    }

    /// Starts the task that expires sessions, ends rebalances at their
    /// deadline and expires old offsets. It stops after [`Self::shutdown`]
    /// or when the coordinator is dropped. Must run inside a glommio executor.
    pub fn spawn_timer(&self) -> glommio::Task<()> {
        let weak = Rc::downgrade(&self.inner);
        let interval = Duration::from_millis(self.inner.config.tick_interval_ms.max(1));
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(interval).await;
                let Some(inner) = weak.upgrade() else { break };
                if !inner.active.get() {
                    break;
                }
                GroupCoordinator { inner }.tick().await;
            }
        })
    }

    pub(super) fn now(&self) -> i64 {
        (self.inner.clock)()
    }

    /// Kafka's validateGroupStatus: the errors every group request can get
    /// before its group is looked at.
    /// A group id longer than `MAX_GROUP_ID_BYTES` is INVALID_GROUP_ID.
    pub(super) fn check_group(&self, group_id: &str, must_be_named: bool) -> Result<(), i16> {
        if (must_be_named && group_id.is_empty()) || group_id.len() > MAX_GROUP_ID_BYTES {
            Err(INVALID_GROUP_ID)
        } else if !self.inner.active.get() {
            Err(COORDINATOR_NOT_AVAILABLE)
        } else if !self.inner.loaded.get() {
            Err(COORDINATOR_LOAD_IN_PROGRESS)
        } else {
            match self.coordinated(self.partition_of(group_id)) {
                None => Err(NOT_COORDINATOR),
                Some(c) if !c.loaded => Err(COORDINATOR_LOAD_IN_PROGRESS),
                Some(_) => Ok(()),
            }
        }
    }

    /// After members left or expired.
    pub(super) fn on_members_removed(&self, group: &mut Group, now: i64) {
        match group.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(group, now);
                self.maybe_complete_join(group, now);
            }
            GroupState::PreparingRebalance => self.maybe_complete_join(group, now),
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    // ---- SyncGroup ----------------------------------------------------

    pub async fn sync_group(&self, req: SyncGroupRequest, version: i16) -> SyncGroupResponse {
        let (step, store) = self.sync_step(&req, version);
        if let Some((generation, value)) = store {
            self.store_assignment(req.group_id.0.as_str(), generation, value)
                .await;
        }
        let outcome = match step {
            Step::Done(outcome) => outcome,
            Step::Wait(rx) => rx
                .recv()
                .await
                .unwrap_or_else(|| SyncOutcome::error(REBALANCE_IN_PROGRESS)),
        };
        let mut resp = SyncGroupResponse::default()
            .with_error_code(outcome.error)
            .with_assignment(outcome.assignment);
        if version >= 5 {
            resp = resp
                .with_protocol_type(outcome.protocol_type.map(StrBytes::from_string))
                .with_protocol_name(outcome.protocol_name.map(StrBytes::from_string));
        }
        resp
    }

    /// What to answer a SyncGroup with, and, from the leader of a
    /// completing rebalance, the group metadata to append (the generation
    /// and the encoded value) before the members are answered.
    fn sync_step(
        &self,
        req: &SyncGroupRequest,
        version: i16,
    ) -> (Step<SyncOutcome>, Option<(i32, Vec<u8>)>) {
        let step = |s: Step<SyncOutcome>| (s, None);
        let group_id = req.group_id.0.as_str();
        if let Err(e) = self.check_group(group_id, true) {
            return step(Step::Done(SyncOutcome::error(e)));
        }
        let now = self.now();
        let mut groups = self.inner.groups.borrow_mut();
        let Some(group) = groups.get_mut(group_id) else {
            return step(Step::Done(SyncOutcome::error(UNKNOWN_MEMBER_ID)));
        };
        let member_id = req.member_id.as_str();
        if let Err(e) = check_member(
            group,
            member_id,
            req.group_instance_id.as_deref(),
            req.generation_id,
        ) {
            return step(Step::Done(SyncOutcome::error(e)));
        }
        if version >= 5 {
            let type_ok = req
                .protocol_type
                .as_ref()
                .is_none_or(|t| group.protocol_type.as_deref() == Some(t.as_str()));
            let name_ok = req
                .protocol_name
                .as_ref()
                .is_none_or(|n| group.protocol_name.as_deref() == Some(n.as_str()));
            if !type_ok || !name_ok {
                return step(Step::Done(SyncOutcome::error(INCONSISTENT_GROUP_PROTOCOL)));
            }
        }
        let ok = |assignment: Bytes| SyncOutcome {
            error: NONE,
            protocol_type: group.protocol_type.clone(),
            protocol_name: group.protocol_name.clone(),
            assignment,
        };
        match group.state {
            GroupState::Empty | GroupState::Dead => {
                step(Step::Done(SyncOutcome::error(UNKNOWN_MEMBER_ID)))
            }
            GroupState::PreparingRebalance => {
                step(Step::Done(SyncOutcome::error(REBALANCE_IN_PROGRESS)))
            }
            GroupState::Stable => {
                let assignment = group
                    .members
                    .get(member_id)
                    .map(|m| m.assignment.clone())
                    .unwrap_or_default();
                let outcome = ok(assignment);
                if let Some(m) = group.members.get_mut(member_id) {
                    m.last_heartbeat_ms = now;
                }
                step(Step::Done(outcome))
            }
            GroupState::CompletingRebalance => {
                let (tx, rx) = local_channel::new_bounded(1);
                let is_leader = group.leader.as_deref() == Some(member_id);
                if let Some(m) = group.members.get_mut(member_id) {
                    m.last_heartbeat_ms = now;
                    m.sync_waiter = Some(tx);
                }
                if !is_leader {
                    return (Step::Wait(rx), None);
                }
                // The members are answered once the assignment is stored
                // (`store_assignment`), so a new coordinator knows it.
                let mut assignments: HashMap<&str, &Bytes> = req
                    .assignments
                    .iter()
                    .map(|a| (a.member_id.as_str(), &a.assignment))
                    .collect();
                for m in group.members.values_mut() {
                    m.assignment = assignments
                        .remove(m.id.as_str())
                        .cloned()
                        .unwrap_or_default();
                }
                let value = records::encode_group_value(&group.to_value(now));
                (Step::Wait(rx), Some((group.generation, value)))
            }
        }
    }

    // ---- Heartbeat ----------------------------------------------------

    pub async fn heartbeat(&self, req: HeartbeatRequest, _version: i16) -> HeartbeatResponse {
        HeartbeatResponse::default().with_error_code(self.heartbeat_error(&req))
    }

    fn heartbeat_error(&self, req: &HeartbeatRequest) -> i16 {
        let group_id = req.group_id.0.as_str();
        if let Err(e) = self.check_group(group_id, true) {
            return e;
        }
        let now = self.now();
        let mut groups = self.inner.groups.borrow_mut();
        let Some(group) = groups.get_mut(group_id) else {
            return UNKNOWN_MEMBER_ID;
        };
        let member_id = req.member_id.as_str();
        if let Err(e) = check_member(
            group,
            member_id,
            req.group_instance_id.as_deref(),
            req.generation_id,
        ) {
            return e;
        }
        let state = group.state;
        if let Some(m) = group.members.get_mut(member_id) {
            m.last_heartbeat_ms = now;
        }
        match state {
            GroupState::Empty | GroupState::Dead => UNKNOWN_MEMBER_ID,
            GroupState::PreparingRebalance => REBALANCE_IN_PROGRESS,
            GroupState::CompletingRebalance | GroupState::Stable => NONE,
        }
    }

    // ---- LeaveGroup ---------------------------------------------------

    pub async fn leave_group(&self, req: LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
        let leaving: Vec<(String, Option<String>)> = if version <= 2 {
            vec![(req.member_id.to_string(), None)]
        } else {
            req.members
                .iter()
                .map(|m| {
                    (
                        m.member_id.to_string(),
                        m.group_instance_id.as_ref().map(|s| s.to_string()),
                    )
                })
                .collect()
        };
        let (top, results) = self.leave_members(req.group_id.0.as_str(), &leaving);
        if version <= 2 {
            let error = if top != NONE {
                top
            } else {
                results.first().copied().unwrap_or(NONE)
            };
            return LeaveGroupResponse::default().with_error_code(error);
        }
        if top != NONE {
            return LeaveGroupResponse::default().with_error_code(top);
        }
        let members = leaving
            .into_iter()
            .zip(results)
            .map(|((member_id, instance), error)| {
                MemberResponse::default()
                    .with_member_id(StrBytes::from_string(member_id))
                    .with_group_instance_id(instance.map(StrBytes::from_string))
                    .with_error_code(error)
            })
            .collect();
        LeaveGroupResponse::default().with_members(members)
    }

    fn leave_members(
        &self,
        group_id: &str,
        leaving: &[(String, Option<String>)],
    ) -> (i16, Vec<i16>) {
        if let Err(e) = self.check_group(group_id, true) {
            return (e, Vec::new());
        }
        let now = self.now();
        let mut groups = self.inner.groups.borrow_mut();
        let Some(group) = groups.get_mut(group_id) else {
            return (NONE, vec![UNKNOWN_MEMBER_ID; leaving.len()]);
        };
        let mut removed_any = false;
        let mut results = Vec::with_capacity(leaving.len());
        for (member_id, instance) in leaving {
            let target = match instance {
                Some(instance) => match group.static_members.get(instance) {
                    None => Err(UNKNOWN_MEMBER_ID),
                    Some(id) if !member_id.is_empty() && id != member_id => Err(FENCED_INSTANCE_ID),
                    Some(id) => Ok(id.clone()),
                },
                None => Ok(member_id.clone()),
            };
            let error = match target {
                Err(e) => e,
                Ok(id) if group.pending_members.remove(&id).is_some() => NONE,
                Ok(id) => match group.remove_member(&id) {
                    Some(mut m) => {
                        tracing::info!(group = %group.id, member = %id, "member left");
                        m.answer_join(JoinOutcome::error(UNKNOWN_MEMBER_ID, &id));
                        m.answer_sync(SyncOutcome::error(UNKNOWN_MEMBER_ID));
                        removed_any = true;
                        NONE
                    }
                    None => UNKNOWN_MEMBER_ID,
                },
            };
            results.push(error);
        }
        if removed_any {
            self.on_members_removed(group, now);
        }
        (NONE, results)
    }

    // ---- timers -------------------------------------------------------

    /// Expires sessions and pending member ids, ends rebalances whose
    /// deadline passed, expires offsets of empty groups. The timer task
    /// calls this every `tick_interval_ms`; tests call it directly.
    pub async fn tick(&self) {
        if !self.inner.loaded.get() || !self.inner.active.get() {
            return;
        }
        self.apply_deadlines(None);
        let now = self.now();
        let interval = self.inner.config.offsets_retention_check_interval_ms;
        if now.saturating_sub(self.inner.last_retention_check_ms.get()) >= interval {
            self.inner.last_retention_check_ms.set(now);
            self.expire_offsets(now).await;
        }
        self.inner.groups.borrow_mut().retain(|_, g| {
            !(g.state == GroupState::Empty
                && g.members.is_empty()
                && g.pending_members.is_empty()
                && g.offsets.is_empty())
        });
    }

    /// Applies the deadlines that have passed (sessions, pending member
    /// ids, rebalances) to the named groups, or to all with `None`, so a
    /// request that reads membership sees the group as it is now rather
    /// than as of the last tick: a group whose members' sessions all ended
    /// is empty at the deadline.
    pub(super) fn apply_deadlines(&self, group_ids: Option<&[&str]>) {
        if !self.inner.loaded.get() || !self.inner.active.get() {
            return;
        }
        let now = self.now();
        let mut groups = self.inner.groups.borrow_mut();
        match group_ids {
            None => {
                for group in groups.values_mut() {
                    self.tick_group(group, now);
                }
            }
            Some(ids) => {
                for id in ids {
                    if let Some(group) = groups.get_mut(*id) {
                        self.tick_group(group, now);
                    }
                }
            }
        }
    }

    fn tick_group(&self, group: &mut Group, now: i64) {
        let before = group.pending_members.len();
        group.pending_members.retain(|_, deadline| *deadline > now);
        let pending_expired = group.pending_members.len() != before;
        let expired: Vec<String> = group
            .members
            .values()
            .filter(|m| {
                !m.is_awaiting_join()
                    && m.sync_waiter.is_none()
                    && now
                        >= m.last_heartbeat_ms
                            .saturating_add(i64::from(m.session_timeout_ms))
            })
            .map(|m| m.id.clone())
            .collect();
        for id in &expired {
            tracing::info!(group = %group.id, member = %id, "member session expired");
            if let Some(mut m) = group.remove_member(id) {
                m.answer_sync(SyncOutcome::error(UNKNOWN_MEMBER_ID));
            }
        }
        if !expired.is_empty() {
            self.on_members_removed(group, now);
        } else if pending_expired {
            self.maybe_complete_join(group, now);
        }
        if group.state == GroupState::PreparingRebalance {
            let Some(r) = group.rebalance.as_mut() else {
                return;
            };
            if r.initial_delay_until_ms.is_some_and(|until| now >= until) {
                r.initial_delay_until_ms = None;
            }
            let delaying = r.initial_delay_until_ms.is_some();
            let deadline_passed = now >= r.deadline_ms;
            if !delaying && (deadline_passed || group.all_members_joined()) {
                self.complete_join(group, now);
            }
        }
    }
}

/// Kafka's order of checks for SyncGroup, Heartbeat and OffsetCommit.
pub(super) fn check_member(
    group: &Group,
    member_id: &str,
    instance_id: Option<&str>,
    generation: i32,
) -> Result<(), i16> {
    if let Some(instance) = instance_id {
        if group
            .static_members
            .get(instance)
            .is_some_and(|id| id != member_id)
        {
            return Err(FENCED_INSTANCE_ID);
        }
    }
    if !group.members.contains_key(member_id) {
        return Err(UNKNOWN_MEMBER_ID);
    }
    if generation != group.generation {
        return Err(ILLEGAL_GENERATION);
    }
    Ok(())
}
