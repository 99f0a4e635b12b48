//! The group coordinator of one shard: membership (JoinGroup, SyncGroup,
//! Heartbeat, LeaveGroup) and the timers that expire sessions and end
//! rebalances. Offsets are in `offsets.rs`.
//!
//! A JoinGroup or SyncGroup that must wait for the rest of the group parks a
//! one-slot channel in its member; whoever completes the rebalance (another
//! member's request or the timer) answers every parked request. No `RefCell`
//! borrow lives across an `.await`: each request does its state change in
//! one synchronous step, then awaits its answer.

use std::cell::{Cell, RefCell};
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use glommio::channels::local_channel::{self, LocalReceiver};
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, SyncGroupRequest, SyncGroupResponse,
};
use kafka_protocol::protocol::StrBytes;
use strom_engine::PartitionLog;

use super::codes::*;
use super::state::{Group, GroupState, JoinOutcome, Member, Rebalance, SyncOutcome};
use super::{offsets_partition_for, ClientInfo, Clock, GroupConfig, TopicLookup};

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
    pub groups: RefCell<HashMap<String, Group>>,
    pub loaded: Cell<bool>,
    pub active: Cell<bool>,
    pub last_retention_check_ms: Cell<i64>,
}

/// Either an answer now or a parked request's receiver.
enum Step<T> {
    Done(T),
    Wait(LocalReceiver<T>),
}

/// The fields of a JoinGroup that make up a member.
struct JoinArgs {
    member_id: String,
    instance_id: Option<String>,
    client: ClientInfo,
    session_timeout_ms: i32,
    rebalance_timeout_ms: i32,
    protocol_type: String,
    protocols: Vec<(String, Bytes)>,
    version: i16,
}

impl JoinArgs {
    fn into_member(self, id: String, now_ms: i64) -> Member {
        Member {
            id,
            instance_id: self.instance_id,
            client_id: self.client.client_id,
            client_host: self.client.client_host,
            session_timeout_ms: self.session_timeout_ms,
            rebalance_timeout_ms: self.rebalance_timeout_ms,
            protocol_type: self.protocol_type,
            protocols: self.protocols,
            assignment: Bytes::new(),
            last_heartbeat_ms: now_ms,
            join_waiter: None,
            sync_waiter: None,
        }
    }
}

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

    /// Whether this coordinator owns `group_id`'s offsets partition.
    pub fn owns(&self, group_id: &str) -> bool {
        let p = offsets_partition_for(group_id, self.inner.config.offsets_topic_num_partitions);
        self.inner.logs.contains_key(&p)
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
                    super::OFFSETS_TOPIC
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
    pub(super) fn check_group(&self, group_id: &str, must_be_named: bool) -> Result<(), i16> {
        if must_be_named && group_id.is_empty() {
            Err(INVALID_GROUP_ID)
        } else if !self.inner.active.get() {
            Err(COORDINATOR_NOT_AVAILABLE)
        } else if !self.inner.loaded.get() {
            Err(COORDINATOR_LOAD_IN_PROGRESS)
        } else if !self.owns(group_id) {
            Err(NOT_COORDINATOR)
        } else {
            Ok(())
        }
    }

    // ---- JoinGroup ----------------------------------------------------

    pub async fn join_group(
        &self,
        req: JoinGroupRequest,
        version: i16,
        client: &ClientInfo,
    ) -> JoinGroupResponse {
        let member_id = req.member_id.to_string();
        let outcome = match self.join_step(req, version, client) {
            Step::Done(outcome) => outcome,
            Step::Wait(rx) => rx
                .recv()
                .await
                .unwrap_or_else(|| JoinOutcome::error(COORDINATOR_NOT_AVAILABLE, &member_id)),
        };
        join_response(outcome, version)
    }

    fn join_step(
        &self,
        req: JoinGroupRequest,
        version: i16,
        client: &ClientInfo,
    ) -> Step<JoinOutcome> {
        let group_id = req.group_id.0.to_string();
        let args = JoinArgs {
            member_id: req.member_id.to_string(),
            instance_id: req.group_instance_id.as_ref().map(|s| s.to_string()),
            client: client.clone(),
            session_timeout_ms: req.session_timeout_ms,
            // JoinGroup v0 has no rebalance timeout; Kafka uses the session timeout.
            rebalance_timeout_ms: if version == 0 {
                req.session_timeout_ms
            } else {
                req.rebalance_timeout_ms
            },
            protocol_type: req.protocol_type.to_string(),
            protocols: req
                .protocols
                .iter()
                .map(|p| (p.name.to_string(), p.metadata.clone()))
                .collect(),
            version,
        };
        if let Err(e) = self.check_group(&group_id, true) {
            return Step::Done(JoinOutcome::error(e, &args.member_id));
        }
        let cfg = &self.inner.config;
        if args.session_timeout_ms < cfg.min_session_timeout_ms
            || args.session_timeout_ms > cfg.max_session_timeout_ms
        {
            return Step::Done(JoinOutcome::error(INVALID_SESSION_TIMEOUT, &args.member_id));
        }
        let now = self.now();
        let mut groups = self.inner.groups.borrow_mut();
        let group = match groups.entry(group_id) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(_) if !args.member_id.is_empty() => {
                return Step::Done(JoinOutcome::error(UNKNOWN_MEMBER_ID, &args.member_id));
            }
            Entry::Vacant(e) => {
                let id = e.key().clone();
                e.insert(Group::new(&id, now))
            }
        };
        if !group.supports_protocols(&args.protocol_type, &args.protocols, &args.member_id) {
            return Step::Done(JoinOutcome::error(
                INCONSISTENT_GROUP_PROTOCOL,
                &args.member_id,
            ));
        }
        if args.member_id.is_empty() {
            self.join_unknown_member(group, args, now)
        } else {
            self.join_known_member(group, args, now)
        }
    }

    fn join_unknown_member(
        &self,
        group: &mut Group,
        args: JoinArgs,
        now: i64,
    ) -> Step<JoinOutcome> {
        if let Some(instance) = &args.instance_id {
            if let Some(old_id) = group.static_members.get(instance).cloned() {
                return self.replace_static_member(group, old_id, args, now);
            }
        }
        if group.members.len() + group.pending_members.len() >= self.inner.config.max_group_size {
            return Step::Done(JoinOutcome::error(GROUP_MAX_SIZE_REACHED, ""));
        }
        let prefix = args
            .instance_id
            .as_deref()
            .unwrap_or(&args.client.client_id)
            .to_string();
        let new_id = format!("{prefix}-{}", new_uuid());
        if args.instance_id.is_none() && args.version >= 4 {
            // KIP-394: the member must come back with its id, so that a
            // client that never got this answer leaves no ghost member.
            group
                .pending_members
                .insert(new_id.clone(), now + args.session_timeout_ms as i64);
            return Step::Done(JoinOutcome::error(MEMBER_ID_REQUIRED, &new_id));
        }
        let member = args.into_member(new_id, now);
        self.add_member_and_rebalance(group, member, now)
    }

    fn join_known_member(&self, group: &mut Group, args: JoinArgs, now: i64) -> Step<JoinOutcome> {
        let member_id = args.member_id.clone();
        if group.pending_members.contains_key(&member_id) {
            let member = args.into_member(member_id, now);
            return self.add_member_and_rebalance(group, member, now);
        }
        if let Err(e) = check_static(group, &member_id, args.instance_id.as_deref()) {
            return Step::Done(JoinOutcome::error(e, &member_id));
        }
        let state = group.state;
        let is_leader = group.leader.as_deref() == Some(member_id.as_str());
        let Some(member) = group.members.get_mut(&member_id) else {
            return Step::Done(JoinOutcome::error(UNKNOWN_MEMBER_ID, &member_id));
        };
        member.last_heartbeat_ms = now;
        let unchanged = member.same_protocols(&args.protocols);
        match state {
            GroupState::Empty | GroupState::Dead => {
                Step::Done(JoinOutcome::error(UNKNOWN_MEMBER_ID, &member_id))
            }
            GroupState::CompletingRebalance if unchanged => {
                Step::Done(current_generation(group, &member_id, false))
            }
            GroupState::Stable if unchanged && !is_leader => {
                Step::Done(current_generation(group, &member_id, false))
            }
            GroupState::PreparingRebalance
            | GroupState::CompletingRebalance
            | GroupState::Stable => {
                update_member(member, args);
                let (tx, rx) = local_channel::new_bounded(1);
                member.join_waiter = Some(tx);
                if state != GroupState::PreparingRebalance {
                    self.prepare_rebalance(group, now);
                }
                self.maybe_complete_join(group, now);
                Step::Wait(rx)
            }
        }
    }

    /// A static member restarted: it takes its old slot under a new member
    /// id, fencing the old id. In a stable group with the same protocols no
    /// rebalance is needed.
    fn replace_static_member(
        &self,
        group: &mut Group,
        old_id: String,
        args: JoinArgs,
        now: i64,
    ) -> Step<JoinOutcome> {
        let Some(mut old) = group.members.shift_remove(&old_id) else {
            group.static_members.retain(|_, id| *id != old_id);
            return Step::Done(JoinOutcome::error(UNKNOWN_MEMBER_ID, ""));
        };
        old.answer_join(JoinOutcome::error(FENCED_INSTANCE_ID, &old_id));
        old.answer_sync(SyncOutcome::error(FENCED_INSTANCE_ID));
        let instance = args.instance_id.clone().unwrap_or_default();
        let new_id = format!("{instance}-{}", new_uuid());
        let unchanged = old.same_protocols(&args.protocols);
        let was_leader = group.leader.as_deref() == Some(old_id.as_str());
        let version = args.version;
        let mut member = args.into_member(new_id.clone(), now);
        member.assignment = old.assignment;
        if was_leader {
            group.leader = Some(new_id.clone());
        }
        group.static_members.insert(instance, new_id.clone());
        match group.state {
            GroupState::Stable if unchanged => {
                group.members.insert(new_id.clone(), member);
                Step::Done(current_generation(
                    group,
                    &new_id,
                    was_leader && version >= 9,
                ))
            }
            _ => {
                let (tx, rx) = local_channel::new_bounded(1);
                member.join_waiter = Some(tx);
                group.members.insert(new_id, member);
                if group.state != GroupState::PreparingRebalance {
                    self.prepare_rebalance(group, now);
                }
                self.maybe_complete_join(group, now);
                Step::Wait(rx)
            }
        }
    }

    fn add_member_and_rebalance(
        &self,
        group: &mut Group,
        mut member: Member,
        now: i64,
    ) -> Step<JoinOutcome> {
        let (tx, rx) = local_channel::new_bounded(1);
        member.join_waiter = Some(tx);
        group.pending_members.remove(&member.id);
        if group.members.is_empty() {
            group.protocol_type = Some(member.protocol_type.clone());
        }
        if group.leader.is_none() {
            group.leader = Some(member.id.clone());
        }
        if let Some(instance) = &member.instance_id {
            group
                .static_members
                .insert(instance.clone(), member.id.clone());
        }
        group.members.insert(member.id.clone(), member);
        match group.state {
            GroupState::PreparingRebalance => {
                let delay = self.inner.config.initial_rebalance_delay_ms;
                if let Some(r) = group.rebalance.as_mut() {
                    if let Some(until) = r.initial_delay_until_ms.as_mut() {
                        // Every new member of a new group restarts the wait
                        // for more, up to the rebalance timeout.
                        *until = (now + delay).min(r.initial_delay_limit_ms).max(*until);
                    }
                }
            }
            _ => self.prepare_rebalance(group, now),
        }
        self.maybe_complete_join(group, now);
        Step::Wait(rx)
    }

    pub(super) fn prepare_rebalance(&self, group: &mut Group, now: i64) {
        if group.state == GroupState::CompletingRebalance {
            for m in group.members.values_mut() {
                m.assignment = Bytes::new();
                m.answer_sync(SyncOutcome::error(REBALANCE_IN_PROGRESS));
            }
        }
        let timeout_ms = group.max_rebalance_timeout_ms();
        let delay_ms = self.inner.config.initial_rebalance_delay_ms;
        let initial = (group.state == GroupState::Empty && delay_ms > 0)
            .then(|| now + delay_ms.min(timeout_ms));
        group.rebalance = Some(Rebalance {
            deadline_ms: now + timeout_ms,
            initial_delay_until_ms: initial,
            initial_delay_limit_ms: now + timeout_ms,
        });
        tracing::info!(group = %group.id, generation = group.generation, "preparing rebalance");
        group.transition(GroupState::PreparingRebalance, now);
    }

    pub(super) fn maybe_complete_join(&self, group: &mut Group, now: i64) {
        if group.state != GroupState::PreparingRebalance {
            return;
        }
        if let Some(r) = &group.rebalance {
            if r.initial_delay_until_ms.is_some_and(|until| now < until) {
                return;
            }
        }
        if group.all_members_joined() {
            self.complete_join(group, now);
        }
    }

    /// Ends the join phase: members that did not rejoin are dropped, the
    /// generation advances, the leader gets everyone's metadata.
    fn complete_join(&self, group: &mut Group, now: i64) {
        assert_eq!(group.state, GroupState::PreparingRebalance);
        let gone: Vec<String> = group
            .members
            .values()
            .filter(|m| !m.is_awaiting_join())
            .map(|m| m.id.clone())
            .collect();
        for id in gone {
            tracing::info!(group = %group.id, member = %id, "member did not rejoin in time");
            if let Some(mut m) = group.remove_member(&id) {
                m.answer_sync(SyncOutcome::error(UNKNOWN_MEMBER_ID));
            }
        }
        group.rebalance = None;
        group.generation += 1;
        if group.members.is_empty() {
            group.protocol_name = None;
            group.leader = None;
            group.transition(GroupState::Empty, now);
            return;
        }
        group.protocol_name = group.select_protocol();
        let leader_ok = group
            .leader
            .as_ref()
            .is_some_and(|l| group.members.contains_key(l));
        if !leader_ok {
            group.leader = group.members.keys().next().cloned();
        }
        group.transition(GroupState::CompletingRebalance, now);
        tracing::info!(group = %group.id, generation = group.generation, members = group.members.len(), "rebalance joined");
        let protocol = group.protocol_name.clone().unwrap_or_default();
        let all: Vec<(String, Option<String>, Bytes)> = group
            .members
            .values()
            .map(|m| {
                (
                    m.id.clone(),
                    m.instance_id.clone(),
                    m.metadata_for(&protocol),
                )
            })
            .collect();
        let leader = group.leader.clone().unwrap_or_default();
        for m in group.members.values_mut() {
            m.assignment = Bytes::new();
            m.last_heartbeat_ms = now;
            let outcome = JoinOutcome {
                error: NONE,
                generation: group.generation,
                protocol_type: group.protocol_type.clone(),
                protocol_name: group.protocol_name.clone(),
                leader: leader.clone(),
                member_id: m.id.clone(),
                members: if m.id == leader {
                    all.clone()
                } else {
                    Vec::new()
                },
                skip_assignment: false,
            };
            m.answer_join(outcome);
        }
    }

    /// After members left or expired.
    fn on_members_removed(&self, group: &mut Group, now: i64) {
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
        let outcome = match self.sync_step(&req, version) {
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

    fn sync_step(&self, req: &SyncGroupRequest, version: i16) -> Step<SyncOutcome> {
        let group_id = req.group_id.0.as_str();
        if let Err(e) = self.check_group(group_id, true) {
            return Step::Done(SyncOutcome::error(e));
        }
        let now = self.now();
        let mut groups = self.inner.groups.borrow_mut();
        let Some(group) = groups.get_mut(group_id) else {
            return Step::Done(SyncOutcome::error(UNKNOWN_MEMBER_ID));
        };
        let member_id = req.member_id.as_str();
        if let Err(e) = check_member(
            group,
            member_id,
            req.group_instance_id.as_deref(),
            req.generation_id,
        ) {
            return Step::Done(SyncOutcome::error(e));
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
                return Step::Done(SyncOutcome::error(INCONSISTENT_GROUP_PROTOCOL));
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
                Step::Done(SyncOutcome::error(UNKNOWN_MEMBER_ID))
            }
            GroupState::PreparingRebalance => Step::Done(SyncOutcome::error(REBALANCE_IN_PROGRESS)),
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
                Step::Done(outcome)
            }
            GroupState::CompletingRebalance => {
                let (tx, rx) = local_channel::new_bounded(1);
                let is_leader = group.leader.as_deref() == Some(member_id);
                if let Some(m) = group.members.get_mut(member_id) {
                    m.last_heartbeat_ms = now;
                    m.sync_waiter = Some(tx);
                }
                if is_leader {
                    let mut assignments: HashMap<&str, &Bytes> = req
                        .assignments
                        .iter()
                        .map(|a| (a.member_id.as_str(), &a.assignment))
                        .collect();
                    let protocol_type = group.protocol_type.clone();
                    let protocol_name = group.protocol_name.clone();
                    for m in group.members.values_mut() {
                        m.assignment = assignments
                            .remove(m.id.as_str())
                            .cloned()
                            .unwrap_or_default();
                        let outcome = SyncOutcome {
                            error: NONE,
                            protocol_type: protocol_type.clone(),
                            protocol_name: protocol_name.clone(),
                            assignment: m.assignment.clone(),
                        };
                        m.answer_sync(outcome);
                    }
                    group.transition(GroupState::Stable, now);
                    tracing::info!(group = %group.id, generation = group.generation, "group stable");
                }
                Step::Wait(rx)
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
        let now = self.now();
        {
            let mut groups = self.inner.groups.borrow_mut();
            for group in groups.values_mut() {
                self.tick_group(group, now);
            }
        }
        let interval = self.inner.config.offsets_retention_check_interval_ms;
        if now - self.inner.last_retention_check_ms.get() >= interval {
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
                    && now >= m.last_heartbeat_ms + m.session_timeout_ms as i64
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

/// The answer to a member whose JoinGroup changes nothing: the current
/// generation, and for the leader everyone's metadata.
fn current_generation(group: &Group, member_id: &str, skip_assignment: bool) -> JoinOutcome {
    let leader = group.leader.clone().unwrap_or_default();
    let protocol = group.protocol_name.clone().unwrap_or_default();
    let members = if leader == member_id {
        group
            .members
            .values()
            .map(|m| {
                (
                    m.id.clone(),
                    m.instance_id.clone(),
                    m.metadata_for(&protocol),
                )
            })
            .collect()
    } else {
        Vec::new()
    };
    JoinOutcome {
        error: NONE,
        generation: group.generation,
        protocol_type: group.protocol_type.clone(),
        protocol_name: group.protocol_name.clone(),
        leader,
        member_id: member_id.to_string(),
        members,
        skip_assignment,
    }
}

fn update_member(member: &mut Member, args: JoinArgs) {
    member.protocols = args.protocols;
    member.protocol_type = args.protocol_type;
    member.session_timeout_ms = args.session_timeout_ms;
    member.rebalance_timeout_ms = args.rebalance_timeout_ms;
    member.client_id = args.client.client_id;
    member.client_host = args.client.client_host;
}

/// A static member's instance id must map to the member id it claims.
fn check_static(group: &Group, member_id: &str, instance_id: Option<&str>) -> Result<(), i16> {
    match instance_id {
        Some(instance) => match group.static_members.get(instance) {
            Some(id) if id == member_id => Ok(()),
            Some(_) => Err(FENCED_INSTANCE_ID),
            None => Err(UNKNOWN_MEMBER_ID),
        },
        None => Ok(()),
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

fn join_response(o: JoinOutcome, version: i16) -> JoinGroupResponse {
    let members = o
        .members
        .into_iter()
        .map(|(id, instance, metadata)| {
            JoinGroupResponseMember::default()
                .with_member_id(StrBytes::from_string(id))
                .with_group_instance_id(if version >= 5 {
                    instance.map(StrBytes::from_string)
                } else {
                    None
                })
                .with_metadata(metadata)
        })
        .collect();
    // Before v7 the protocol name is not nullable.
    let protocol_name = match o.protocol_name {
        Some(name) => Some(StrBytes::from_string(name)),
        None if version < 7 => Some(StrBytes::default()),
        None => None,
    };
    JoinGroupResponse::default()
        .with_error_code(o.error)
        .with_generation_id(o.generation)
        .with_protocol_type(if version >= 7 {
            o.protocol_type.map(StrBytes::from_string)
        } else {
            None
        })
        .with_protocol_name(protocol_name)
        .with_leader(StrBytes::from_string(o.leader))
        .with_skip_assignment(version >= 9 && o.skip_assignment)
        .with_member_id(StrBytes::from_string(o.member_id))
        .with_members(members)
}

/// A random UUID in its usual text form, as Kafka's member ids carry.
fn new_uuid() -> String {
    let v: u128 = rand::random();
    let h = format!("{v:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}
