//! JoinGroup, the join phase of a rebalance: a member joins or rejoins, the
//! group prepares a rebalance, and the join completes once every member has
//! rejoined (or the rebalance times out), when the generation advances and
//! the leader gets everyone's metadata. The coordinator handle, SyncGroup,
//! Heartbeat, LeaveGroup and the timers are in `coordinator.rs`.

use std::collections::hash_map::Entry;

use bytes::Bytes;
use glommio::channels::local_channel;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};
use kafka_protocol::protocol::StrBytes;

use super::codes::*;
use super::config::ClientInfo;
use super::coordinator::{GroupCoordinator, Step};
use super::state::{Group, GroupState, JoinOutcome, Member, Rebalance, SyncOutcome};

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
        if group
            .members
            .len()
            .saturating_add(group.pending_members.len())
            >= self.inner.config.max_group_size
        {
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
            group.pending_members.insert(
                new_id.clone(),
                now.saturating_add(i64::from(args.session_timeout_ms)),
            );
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
                        *until = now
                            .saturating_add(delay)
                            .min(r.initial_delay_limit_ms)
                            .max(*until);
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
            .then(|| now.saturating_add(delay_ms.min(timeout_ms)));
        group.rebalance = Some(Rebalance {
            deadline_ms: now.saturating_add(timeout_ms),
            initial_delay_until_ms: initial,
            initial_delay_limit_ms: now.saturating_add(timeout_ms),
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
    pub(super) fn complete_join(&self, group: &mut Group, now: i64) {
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
        group.generation = group.generation.wrapping_add(1);
        if group.members.is_empty() {
            group.protocol_name = None;
            group.leader = None;
            group.transition(GroupState::Empty, now);
            self.store_empty_later(group, now);
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
