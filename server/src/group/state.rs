//! The plain data of a classic group and the rules that need no I/O.
//!
//! States follow Kafka's `GroupState`:
//!
//! ```text
//!   Empty ──join──▶ PreparingRebalance ──all joined / timeout──▶ CompletingRebalance
//!     ▲                 ▲        │ (no members left)                   │ leader's SyncGroup
//!     └─────────────────┼────────┘                                     ▼
//!                       └──── join with new metadata, leave, expiry ── Stable
//! ```

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use glommio::channels::local_channel::LocalSender;
use indexmap::IndexMap;

use super::records::{GroupValue, MemberValue};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// The name Kafka uses in ListGroups and DescribeGroups.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// What a parked JoinGroup is answered with.
#[derive(Debug, Clone, Default)]
pub struct JoinOutcome {
    pub error: i16,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Every member's metadata for the selected protocol; only the leader
    /// gets it.
    pub members: Vec<(String, Option<String>, Bytes)>,
    pub skip_assignment: bool,
}

impl JoinOutcome {
    pub fn error(error: i16, member_id: &str) -> JoinOutcome {
        JoinOutcome {
            error,
            generation: -1,
            member_id: member_id.to_string(),
            ..Default::default()
        }
    }
}

/// What a parked SyncGroup is answered with.
#[derive(Debug, Clone, Default)]
pub struct SyncOutcome {
    pub error: i16,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncOutcome {
    pub fn error(error: i16) -> SyncOutcome {
        SyncOutcome {
            error,
            ..Default::default()
        }
    }
}

pub struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    /// (name, metadata) in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    pub last_heartbeat_ms: i64,
    pub join_waiter: Option<LocalSender<JoinOutcome>>,
    pub sync_waiter: Option<LocalSender<SyncOutcome>>,
}

impl Member {
    pub fn is_awaiting_join(&self) -> bool {
        self.join_waiter.is_some()
    }

    pub fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }

    pub fn same_protocols(&self, protocols: &[(String, Bytes)]) -> bool {
        self.protocols == protocols
    }

    /// Answers a parked JoinGroup, if any. A dropped receiver (the client
    /// went away) is not an error.
    pub fn answer_join(&mut self, outcome: JoinOutcome) {
        if let Some(tx) = self.join_waiter.take() {
            let _ = tx.try_send(outcome);
        }
    }

    pub fn answer_sync(&mut self, outcome: SyncOutcome) {
        if let Some(tx) = self.sync_waiter.take() {
            let _ = tx.try_send(outcome);
        }
    }
}

/// One committed offset, as in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
    /// Offset of the record in `__consumer_offsets`: a later record wins,
    /// whatever order concurrent appends complete in.
    pub log_offset: i64,
}

/// Deadlines of a rebalance in progress.
#[derive(Debug, Clone, Copy)]
pub struct Rebalance {
    /// Members that have not rejoined by then are removed.
    pub deadline_ms: i64,
    /// The first rebalance of an empty group waits for more members until
    /// this time (`group.initial.rebalance.delay.ms`, extended per join).
    pub initial_delay_until_ms: Option<i64>,
    pub initial_delay_limit_ms: i64,
}

pub struct Group {
    pub id: String,
    pub state: GroupState,
    pub state_since_ms: i64,
    /// When the group last became empty; offsets expire from then. `None`
    /// for groups rebuilt from the log.
    pub empty_since_ms: Option<i64>,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: Option<String>,
    pub members: IndexMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, with their deadline.
    pub pending_members: HashMap<String, i64>,
    /// group.instance.id → member id.
    pub static_members: HashMap<String, String>,
    pub rebalance: Option<Rebalance>,
    pub offsets: BTreeMap<(String, i32), Committed>,
}

impl Group {
    pub fn new(id: &str, now_ms: i64) -> Group {
        Group {
            id: id.to_string(),
            state: GroupState::Empty,
            state_since_ms: now_ms,
            empty_since_ms: Some(now_ms),
            generation: 0,
            protocol_type: None,
            protocol_name: None,
            leader: None,
            members: IndexMap::new(),
            pending_members: HashMap::new(),
            static_members: HashMap::new(),
            rebalance: None,
            offsets: BTreeMap::new(),
        }
    }

    pub fn transition(&mut self, state: GroupState, now_ms: i64) {
        self.state = state;
        self.state_since_ms = now_ms;
        if state == GroupState::Empty {
            self.empty_since_ms = Some(now_ms);
        }
    }

    /// Protocols every member supports; with no members, none.
    pub fn candidate_protocols(&self) -> Vec<String> {
        let mut iter = self.members.values();
        let Some(first) = iter.next() else {
            return Vec::new();
        };
        let mut out: Vec<String> = first.protocols.iter().map(|(n, _)| n.clone()).collect();
        for m in iter {
            out.retain(|name| m.protocols.iter().any(|(n, _)| n == name));
        }
        out
    }

    /// Whether a member with `protocols` could join (or rejoin, replacing
    /// `member_id`'s protocols) without leaving the group without a common
    /// protocol.
    pub fn supports_protocols(
        &self,
        protocol_type: &str,
        protocols: &[(String, Bytes)],
        member_id: &str,
    ) -> bool {
        if protocols.is_empty() || protocol_type.is_empty() {
            return false;
        }
        let others: Vec<&Member> = self
            .members
            .values()
            .filter(|m| m.id != member_id)
            .collect();
        if others.is_empty() {
            return true;
        }
        if self
            .protocol_type
            .as_deref()
            .is_some_and(|t| t != protocol_type)
        {
            return false;
        }
        protocols.iter().any(|(name, _)| {
            others
                .iter()
                .all(|m| m.protocols.iter().any(|(n, _)| n == name))
        })
    }

    /// Kafka's vote: each member votes for its most preferred protocol among
    /// those all members support; the most votes wins, ties going to the
    /// first candidate in the first member's order.
    pub fn select_protocol(&self) -> Option<String> {
        let candidates = self.candidate_protocols();
        if candidates.is_empty() {
            return self
                .members
                .values()
                .next()
                .and_then(|m| m.protocols.first().map(|(n, _)| n.clone()));
        }
        let mut votes = vec![0usize; candidates.len()];
        for m in self.members.values() {
            if let Some(i) = m
                .protocols
                .iter()
                .find_map(|(n, _)| candidates.iter().position(|c| c == n))
            {
                if let Some(v) = votes.get_mut(i) {
                    *v = v.saturating_add(1);
                }
            }
        }
        let best = votes.iter().copied().max().unwrap_or(0);
        candidates
            .into_iter()
            .zip(votes)
            .find(|(_, v)| *v == best)
            .map(|(c, _)| c)
    }

    pub fn all_members_joined(&self) -> bool {
        self.pending_members.is_empty() && self.members.values().all(Member::is_awaiting_join)
    }

    pub fn max_rebalance_timeout_ms(&self) -> i64 {
        self.members
            .values()
            .map(|m| m.rebalance_timeout_ms as i64)
            .max()
            .unwrap_or(0)
    }

    /// Removes a member; returns it. Clears the leader if it was the leader.
    pub fn remove_member(&mut self, member_id: &str) -> Option<Member> {
        let member = self.members.shift_remove(member_id)?;
        if let Some(instance) = &member.instance_id {
            if self.static_members.get(instance).map(String::as_str) == Some(member_id) {
                self.static_members.remove(instance);
            }
        }
        if self.leader.as_deref() == Some(member_id) {
            self.leader = None;
        }
        Some(member)
    }

    /// Topics the members subscribe to, when they speak the consumer
    /// protocol (its Subscription starts with a version and the topic list);
    /// `None` when that cannot be known.
    pub fn subscribed_topics(&self) -> Option<Vec<String>> {
        if self.protocol_type.as_deref() != Some("consumer") {
            return None;
        }
        let protocol = self.protocol_name.as_deref()?;
        let mut out = Vec::new();
        for m in self.members.values() {
            out.extend(parse_subscription_topics(&m.metadata_for(protocol))?);
        }
        Some(out)
    }
}

impl Group {
    /// This group's GroupMetadata value as it is now.
    pub fn to_value(&self, now: i64) -> GroupValue {
        let protocol = self.protocol_name.clone();
        let selected = protocol.clone().unwrap_or_default();
        GroupValue {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation,
            protocol,
            leader: self.leader.clone(),
            current_state_timestamp_ms: now,
            members: self
                .members
                .values()
                .map(|m| MemberValue {
                    member_id: m.id.clone(),
                    group_instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    session_timeout_ms: m.session_timeout_ms,
                    subscription: m.metadata_for(&selected),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }

    /// Applies a replayed GroupMetadata record: the group takes the stored
    /// generation and members (Stable, or Empty without members), each member's
    /// session starting `now`; a tombstone leaves it empty at generation 0
    /// (its offsets are tombstoned with it). Offsets are untouched.
    pub fn apply_value(&mut self, value: Option<GroupValue>, now: i64) {
        self.members.clear();
        self.static_members.clear();
        self.pending_members.clear();
        self.rebalance = None;
        let Some(v) = value else {
            self.generation = 0;
            self.protocol_type = None;
            self.protocol_name = None;
            self.leader = None;
            self.transition(GroupState::Empty, now);
            return;
        };
        self.generation = v.generation;
        self.protocol_type = Some(v.protocol_type.clone()).filter(|t| !t.is_empty());
        self.protocol_name = v.protocol.clone();
        self.leader = v.leader.clone();
        let protocol = v.protocol.unwrap_or_default();
        for m in v.members {
            if let Some(instance) = &m.group_instance_id {
                self.static_members
                    .insert(instance.clone(), m.member_id.clone());
            }
            let member = Member {
                id: m.member_id.clone(),
                instance_id: m.group_instance_id,
                client_id: m.client_id,
                client_host: m.client_host,
                session_timeout_ms: m.session_timeout_ms,
                rebalance_timeout_ms: m.rebalance_timeout_ms,
                protocol_type: v.protocol_type.clone(),
                protocols: vec![(protocol.clone(), m.subscription)],
                assignment: m.assignment,
                last_heartbeat_ms: now,
                join_waiter: None,
                sync_waiter: None,
            };
            self.members.insert(m.member_id, member);
        }
        if self.members.is_empty() {
            self.leader = None;
            self.transition(GroupState::Empty, now);
        } else {
            self.transition(GroupState::Stable, now);
        }
    }
}

/// Topics of a ConsumerProtocolSubscription (any version: they all start
/// with int16 version, then an array of int16-length strings).
pub fn parse_subscription_topics(buf: &[u8]) -> Option<Vec<String>> {
    let count = i32::from_be_bytes(buf.get(2..6)?.try_into().ok()?);
    if count < 0 {
        return Some(Vec::new());
    }
    let mut rest = buf.get(6..)?;
    let mut out = Vec::new();
    for _ in 0..count {
        let (len, after) = rest.split_at_checked(2)?;
        let len = usize::try_from(i16::from_be_bytes(len.try_into().ok()?)).ok()?;
        let (bytes, after) = after.split_at_checked(len)?;
        out.push(String::from_utf8(bytes.to_vec()).ok()?);
        rest = after;
    }
    Some(out)
}
