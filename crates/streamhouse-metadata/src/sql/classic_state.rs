//! A Kafka classic consumer group as plain data, and every transition of
//! it: JoinGroup, SyncGroup, Heartbeat, LeaveGroup, session expiry, the end
//! of the join phase (protocol choice, generation, leader), and the checks
//! of a generation-fenced offset commit. The SQL around it (lock the row,
//! read the database clock, load, apply, store) is in `classic_store.rs`;
//! the encoding of the state in its row is in `classic_codec.rs`.

use std::collections::BTreeMap;

use crate::classic::{
    CONSUMER_PROTOCOL_TYPE, ClassicGroupDescription, ClassicJoin, ClassicMemberDescription,
    ClassicPhase, ClassicSync, ENTRY_OVERHEAD_BYTES, JoinProgress, JoinedMember, MAX_MEMBER_BYTES,
    MAX_NAME_BYTES, MAX_PROTOCOLS, SyncProgress,
};
use crate::error::{Error, Result};
use crate::validate_group_id;

/// The most assignments a leader's SyncGroup may carry (one per member).
const MAX_ASSIGNMENTS: usize = 10_000;

/// A member of a classic group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Member {
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i64,
    pub rebalance_timeout_ms: i64,
    /// Protocol names and metadata in the member's preference order.
    pub protocols: Vec<(String, Vec<u8>)>,
    /// The database time of the member's last request.
    pub last_seen_ms: i64,
    /// Has (re)joined during the current join phase.
    pub awaiting_join: bool,
    /// The generation the member was last admitted to (0: none yet).
    pub generation: i32,
    /// What the leader assigned it in its generation.
    pub assignment: Vec<u8>,
}

/// A classic group at the database time `now`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Group {
    pub group_id: String,
    /// The database clock when the row was locked.
    pub now: i64,
    pub phase: ClassicPhase,
    pub generation: i32,
    /// The protocol type of the members (empty when there are none).
    pub protocol_type: String,
    /// The protocol chosen for the current generation (empty when none).
    pub protocol: String,
    pub leader: Option<String>,
    /// When the join phase ends even if members have not rejoined.
    pub rebalance_deadline_ms: i64,
    /// In the first join phase of a group that had no members: the join
    /// phase does not end before this, unless its deadline passes (0: no
    /// such wait).
    pub initial_join_until_ms: i64,
    pub members: BTreeMap<String, Member>,
}

/// Checks a join's arguments.
pub(crate) fn validate_join(j: &ClassicJoin) -> Result<()> {
    validate_group_id(&j.group_id)?;
    if j.member_id.is_empty() {
        return Err(Error::InvalidArgument {
            field: "member id",
            reason: "is empty".into(),
        });
    }
    if j.session_timeout_ms <= 0 || j.rebalance_timeout_ms <= 0 {
        return Err(Error::InvalidArgument {
            field: "timeout",
            reason: format!(
                "session {} ms and rebalance {} ms must be positive",
                j.session_timeout_ms, j.rebalance_timeout_ms
            ),
        });
    }
    if j.protocol_type.is_empty() || j.protocols.is_empty() {
        return Err(Error::InconsistentGroupProtocol {
            group: j.group_id.clone(),
            reason: "a join needs a protocol type and at least one protocol".into(),
        });
    }
    if j.protocols.len() > MAX_PROTOCOLS {
        return Err(Error::InvalidArgument {
            field: "protocols",
            reason: format!(
                "{} protocols is over the {MAX_PROTOCOLS} a member may offer",
                j.protocols.len()
            ),
        });
    }
    let names = [
        ("member id", j.member_id.as_str()),
        (
            "group instance id",
            j.group_instance_id.as_deref().unwrap_or(""),
        ),
        ("client id", j.client_id.as_str()),
        ("client host", j.client_host.as_str()),
        ("protocol type", j.protocol_type.as_str()),
    ];
    let protocol_names = j
        .protocols
        .iter()
        .map(|(n, _)| ("protocol name", n.as_str()));
    if let Some((field, name)) = names
        .into_iter()
        .chain(protocol_names)
        .find(|(_, n)| n.len() > MAX_NAME_BYTES)
    {
        return Err(Error::InvalidArgument {
            field,
            reason: format!("{} bytes is over {MAX_NAME_BYTES}", name.len()),
        });
    }
    let metadata: usize = j
        .protocols
        .iter()
        .map(|(n, m)| n.len() + m.len() + ENTRY_OVERHEAD_BYTES)
        .sum();
    if metadata > MAX_MEMBER_BYTES {
        return Err(Error::InvalidArgument {
            field: "protocol metadata",
            reason: format!("{metadata} bytes is over the {MAX_MEMBER_BYTES} bytes per member"),
        });
    }
    Ok(())
}

/// Checks a sync's arguments.
pub(crate) fn validate_sync(s: &ClassicSync) -> Result<()> {
    validate_group_id(&s.group_id)?;
    if s.assignments.len() > MAX_ASSIGNMENTS {
        return Err(Error::InvalidArgument {
            field: "assignments",
            reason: format!(
                "{} assignments is over {MAX_ASSIGNMENTS}",
                s.assignments.len()
            ),
        });
    }
    if let Some((id, _)) = s
        .assignments
        .iter()
        .find(|(id, _)| id.len() > MAX_NAME_BYTES)
    {
        return Err(Error::InvalidArgument {
            field: "member id",
            reason: format!("{} bytes is over {MAX_NAME_BYTES}", id.len()),
        });
    }
    if let Some((id, a)) = s
        .assignments
        .iter()
        .find(|(_, a)| a.len() > MAX_MEMBER_BYTES)
    {
        return Err(Error::InvalidArgument {
            field: "assignment",
            reason: format!(
                "{} bytes for member {id:?} is over the {MAX_MEMBER_BYTES} bytes per member",
                a.len()
            ),
        });
    }
    Ok(())
}

impl Group {
    /// A group with no members.
    pub fn empty(group_id: &str, now: i64) -> Group {
        Group {
            group_id: group_id.to_string(),
            now,
            phase: ClassicPhase::Empty,
            generation: 0,
            protocol_type: String::new(),
            protocol: String::new(),
            leader: None,
            rebalance_deadline_ms: 0,
            initial_join_until_ms: 0,
            members: BTreeMap::new(),
        }
    }

    /// The bytes of member state the group holds: ids, protocols with
    /// their metadata, assignments.
    pub fn state_bytes(&self) -> usize {
        self.members
            .iter()
            .map(|(id, m)| {
                ENTRY_OVERHEAD_BYTES
                    + id.len()
                    + m.client_id.len()
                    + m.client_host.len()
                    + m.instance_id.as_ref().map_or(0, String::len)
                    + m.protocols
                        .iter()
                        .map(|(n, md)| ENTRY_OVERHEAD_BYTES + n.len() + md.len())
                        .sum::<usize>()
                    + m.assignment.len()
            })
            .sum()
    }

    /// The database time after which every member's session has expired
    /// (0 without members).
    pub fn live_until_ms(&self) -> i64 {
        self.members
            .values()
            .map(|m| m.last_seen_ms.saturating_add(m.session_timeout_ms))
            .max()
            .unwrap_or(0)
    }

    /// Removes the members whose session expired, then moves the group on
    /// (a rebalance for those left, or Empty), and ends a join phase whose
    /// deadline passed.
    pub fn expire(&mut self) {
        let now = self.now;
        let before = self.members.len();
        self.members
            .retain(|_, m| now - m.last_seen_ms <= m.session_timeout_ms);
        if self.members.len() != before {
            self.after_removal();
        } else {
            self.try_complete_join();
        }
    }

    fn after_removal(&mut self) {
        if let Some(l) = &self.leader
            && !self.members.contains_key(l)
        {
            self.leader = None;
        }
        if matches!(
            self.phase,
            ClassicPhase::Stable | ClassicPhase::CompletingRebalance
        ) {
            self.prepare_rebalance();
        }
        self.try_complete_join();
    }

    /// Starts a join phase: every member must rejoin by the deadline.
    fn prepare_rebalance(&mut self) {
        self.phase = ClassicPhase::PreparingRebalance;
        let longest = self
            .members
            .values()
            .map(|m| m.rebalance_timeout_ms)
            .max()
            .unwrap_or(0);
        self.rebalance_deadline_ms = self.now.saturating_add(longest);
        self.initial_join_until_ms = 0;
        for m in self.members.values_mut() {
            m.awaiting_join = false;
        }
    }

    /// Ends the join phase once every member rejoined or the deadline
    /// passed: drops the members that did not rejoin, bumps the
    /// generation, chooses the protocol and the leader.
    fn try_complete_join(&mut self) {
        if self.phase != ClassicPhase::PreparingRebalance {
            return;
        }
        if self.now < self.rebalance_deadline_ms {
            let all = self.members.values().all(|m| m.awaiting_join);
            if !all || self.now < self.initial_join_until_ms {
                return;
            }
        }
        self.initial_join_until_ms = 0;
        self.members.retain(|_, m| m.awaiting_join);
        self.generation = self.generation.wrapping_add(1).max(1);
        if self.members.is_empty() {
            self.phase = ClassicPhase::Empty;
            self.protocol_type.clear();
            self.protocol.clear();
            self.leader = None;
            return;
        }
        self.protocol = self.select_protocol();
        let leader = match &self.leader {
            Some(l) if self.members.contains_key(l) => l.clone(),
            _ => self.members.keys().next().cloned().unwrap_or_default(),
        };
        self.leader = Some(leader);
        self.phase = ClassicPhase::CompletingRebalance;
        let generation = self.generation;
        for m in self.members.values_mut() {
            m.awaiting_join = false;
            m.generation = generation;
            m.assignment.clear();
        }
    }

    /// The protocol every member supports that most members prefer (each
    /// votes for its first supported one), ties going to the leader's (or
    /// first member's) preference order, as Kafka chooses.
    fn select_protocol(&self) -> String {
        let supported = |name: &str| {
            self.members
                .values()
                .all(|m| m.protocols.iter().any(|(n, _)| n == name))
        };
        let reference = self
            .leader
            .as_ref()
            .and_then(|l| self.members.get(l))
            .or_else(|| self.members.values().next());
        let Some(reference) = reference else {
            return String::new();
        };
        let candidates: Vec<&str> = reference
            .protocols
            .iter()
            .map(|(n, _)| n.as_str())
            .filter(|n| supported(n))
            .collect();
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some((n, _)) = m
                .protocols
                .iter()
                .find(|(n, _)| candidates.contains(&n.as_str()))
            {
                *votes.entry(n.as_str()).or_default() += 1;
            }
        }
        let mut best: Option<(&str, usize)> = None;
        for c in &candidates {
            let v = votes.get(c).copied().unwrap_or(0);
            if best.is_none_or(|(_, b)| v > b) {
                best = Some((c, v));
            }
        }
        best.map(|(n, _)| n.to_string())
            .or_else(|| reference.protocols.first().map(|(n, _)| n.clone()))
            .unwrap_or_default()
    }

    /// The member id an instance id belongs to.
    fn member_of_instance(&self, instance: &str) -> Option<&String> {
        self.members
            .iter()
            .find(|(_, m)| m.instance_id.as_deref() == Some(instance))
            .map(|(id, _)| id)
    }

    /// A request of `member_id` (with its instance id) must come from a
    /// current member.
    fn check_member(&self, member_id: &str, instance_id: Option<&str>) -> Result<()> {
        if let Some(instance) = instance_id
            && let Some(current) = self.member_of_instance(instance)
            && current != member_id
        {
            return Err(Error::FencedInstanceId {
                group: self.group_id.clone(),
                instance_id: instance.to_string(),
                member_id: member_id.to_string(),
            });
        }
        if !self.members.contains_key(member_id) {
            return Err(self.unknown(member_id));
        }
        Ok(())
    }

    fn unknown(&self, member_id: &str) -> Error {
        Error::UnknownMember {
            group: self.group_id.clone(),
            member_id: member_id.to_string(),
        }
    }

    fn touch(&mut self, member_id: &str) {
        let now = self.now;
        if let Some(m) = self.members.get_mut(member_id) {
            m.last_seen_ms = now;
        }
    }

    /// Whether a join's protocol type and protocols fit the other members.
    fn check_protocols(&self, j: &ClassicJoin) -> Result<()> {
        let others: Vec<&Member> = self
            .members
            .iter()
            .filter(|(id, _)| **id != j.member_id)
            .map(|(_, m)| m)
            .collect();
        if others.is_empty() {
            return Ok(());
        }
        let inconsistent = |reason: String| Error::InconsistentGroupProtocol {
            group: self.group_id.clone(),
            reason,
        };
        if j.protocol_type != self.protocol_type {
            return Err(inconsistent(format!(
                "protocol type {:?} is not the group's {:?}",
                j.protocol_type, self.protocol_type
            )));
        }
        let shared = j.protocols.iter().any(|(name, _)| {
            others
                .iter()
                .all(|m| m.protocols.iter().any(|(n, _)| n == name))
        });
        if !shared {
            let names: Vec<&str> = j.protocols.iter().map(|(n, _)| n.as_str()).collect();
            return Err(inconsistent(format!(
                "no protocol of {names:?} is supported by every member"
            )));
        }
        Ok(())
    }

    /// A JoinGroup (first or repeated): admits or refreshes the member,
    /// starts a join phase when needed, ends it when it can, and tells the
    /// member where it stands.
    pub fn join(&mut self, j: &ClassicJoin) -> Result<JoinProgress> {
        self.check_protocols(j)?;
        if let Some(instance) = &j.group_instance_id
            && let Some(current) = self.member_of_instance(instance).cloned()
            && current != j.member_id
        {
            if !j.new_member {
                return Err(Error::FencedInstanceId {
                    group: self.group_id.clone(),
                    instance_id: instance.clone(),
                    member_id: j.member_id.clone(),
                });
            }
            // A new instance of a static member takes over its member
            // id's place, assignment and generation.
            if let Some(m) = self.members.remove(&current) {
                self.members.insert(j.member_id.clone(), m);
            }
            if self.leader.as_deref() == Some(current.as_str()) {
                self.leader = Some(j.member_id.clone());
            }
            return self.rejoin(j, false);
        }
        if self.members.contains_key(&j.member_id) {
            let is_leader = self.leader.as_deref() == Some(j.member_id.as_str());
            return self.rejoin(j, is_leader);
        }
        if j.repeat {
            // Admitted by an earlier call and removed since.
            return Err(self.unknown(&j.member_id));
        }
        if self.members.is_empty() {
            self.protocol_type = j.protocol_type.clone();
        }
        self.members.insert(
            j.member_id.clone(),
            Member {
                instance_id: j.group_instance_id.clone(),
                client_id: j.client_id.clone(),
                client_host: j.client_host.clone(),
                session_timeout_ms: i64::from(j.session_timeout_ms),
                rebalance_timeout_ms: i64::from(j.rebalance_timeout_ms),
                protocols: j.protocols.clone(),
                last_seen_ms: self.now,
                awaiting_join: false,
                generation: 0,
                assignment: Vec::new(),
            },
        );
        let initial = self.phase == ClassicPhase::Empty;
        if self.phase != ClassicPhase::PreparingRebalance {
            self.prepare_rebalance();
        }
        if initial || self.initial_join_until_ms > 0 {
            // The first join phase waits for more members, and longer for
            // each one that comes, up to its deadline.
            let delay = i64::from(j.initial_rebalance_delay_ms.max(0));
            self.initial_join_until_ms = self
                .now
                .saturating_add(delay)
                .min(self.rebalance_deadline_ms);
        }
        self.mark_awaiting(&j.member_id);
        self.try_complete_join();
        self.join_answer(&j.member_id)
    }

    /// A known member's join. In a join phase it has now rejoined; after
    /// one, it gets its generation back unless its protocols changed (or,
    /// as in Kafka, it is the leader of a stable group), which starts a
    /// new join phase.
    fn rejoin(&mut self, j: &ClassicJoin, rebalance_if_stable: bool) -> Result<JoinProgress> {
        let now = self.now;
        let Some(m) = self.members.get_mut(&j.member_id) else {
            return Err(self.unknown(&j.member_id));
        };
        let changed = m.protocols != j.protocols;
        m.protocols = j.protocols.clone();
        m.client_id = j.client_id.clone();
        m.client_host = j.client_host.clone();
        m.session_timeout_ms = i64::from(j.session_timeout_ms);
        m.rebalance_timeout_ms = i64::from(j.rebalance_timeout_ms);
        m.instance_id = j.group_instance_id.clone();
        m.last_seen_ms = now;
        match self.phase {
            ClassicPhase::PreparingRebalance => {}
            ClassicPhase::CompletingRebalance | ClassicPhase::Stable => {
                let stable_leader = rebalance_if_stable && self.phase == ClassicPhase::Stable;
                if !changed && !stable_leader {
                    return self.join_answer(&j.member_id);
                }
                self.prepare_rebalance();
            }
            ClassicPhase::Empty => self.prepare_rebalance(),
        }
        self.mark_awaiting(&j.member_id);
        self.try_complete_join();
        self.join_answer(&j.member_id)
    }

    fn mark_awaiting(&mut self, member_id: &str) {
        if let Some(m) = self.members.get_mut(member_id) {
            m.awaiting_join = true;
        }
    }

    fn join_answer(&self, member_id: &str) -> Result<JoinProgress> {
        let m = self
            .members
            .get(member_id)
            .ok_or_else(|| self.unknown(member_id))?;
        let done = matches!(
            self.phase,
            ClassicPhase::CompletingRebalance | ClassicPhase::Stable
        ) && m.generation == self.generation;
        if !done {
            return Ok(JoinProgress::Waiting);
        }
        let leader = self.leader.clone().unwrap_or_default();
        let members = if leader == member_id {
            self.members
                .iter()
                .map(|(id, m)| JoinedMember {
                    member_id: id.clone(),
                    group_instance_id: m.instance_id.clone(),
                    metadata: m.metadata(&self.protocol).to_vec(),
                })
                .collect()
        } else {
            Vec::new()
        };
        Ok(JoinProgress::Joined {
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
            leader,
            member_id: member_id.to_string(),
            members,
        })
    }

    /// A SyncGroup: the leader's stores the assignments and makes the
    /// group stable; the others wait for that and get theirs.
    pub fn sync(&mut self, s: &ClassicSync) -> Result<SyncProgress> {
        self.check_member(&s.member_id, s.group_instance_id.as_deref())?;
        self.touch(&s.member_id);
        if self.phase == ClassicPhase::PreparingRebalance {
            return Err(Error::RebalanceInProgress(self.group_id.clone()));
        }
        self.check_generation(&s.member_id, s.generation)?;
        let mismatch =
            |given: &Option<String>, ours: &str| given.as_deref().is_some_and(|g| g != ours);
        if mismatch(&s.protocol_type, &self.protocol_type)
            || mismatch(&s.protocol_name, &self.protocol)
        {
            return Err(Error::InconsistentGroupProtocol {
                group: self.group_id.clone(),
                reason: format!(
                    "sync names protocol {:?}/{:?}, the generation's is {:?}/{:?}",
                    s.protocol_type, s.protocol_name, self.protocol_type, self.protocol
                ),
            });
        }
        if self.phase == ClassicPhase::CompletingRebalance {
            if self.leader.as_deref() != Some(s.member_id.as_str()) {
                return Ok(SyncProgress::Waiting);
            }
            for (id, assignment) in &s.assignments {
                // An assignment for a member that is not in the
                // generation is dropped.
                if let Some(m) = self.members.get_mut(id) {
                    m.assignment = assignment.clone();
                }
            }
            self.phase = ClassicPhase::Stable;
        }
        let assignment = self
            .members
            .get(&s.member_id)
            .map(|m| m.assignment.clone())
            .unwrap_or_default();
        Ok(SyncProgress::Assigned {
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
            assignment,
        })
    }

    fn check_generation(&self, member_id: &str, generation: i32) -> Result<()> {
        if generation != self.generation {
            return Err(Error::IllegalGeneration {
                group: self.group_id.clone(),
                member_id: member_id.to_string(),
                generation,
                current: self.generation,
            });
        }
        Ok(())
    }

    /// A Heartbeat: refreshes the member's session; tells it to rejoin
    /// while a join phase runs.
    pub fn heartbeat(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<()> {
        self.check_member(member_id, instance_id)?;
        self.touch(member_id);
        if self.phase == ClassicPhase::PreparingRebalance {
            return Err(Error::RebalanceInProgress(self.group_id.clone()));
        }
        self.check_generation(member_id, generation)
    }

    /// A LeaveGroup of some members (by member id, or by instance id for
    /// static members): one answer per member; the rest rebalance.
    pub fn leave(&mut self, members: &[(String, Option<String>)]) -> Vec<Result<()>> {
        let mut removed = false;
        let answers = members
            .iter()
            .map(|(member_id, instance)| {
                let id = match instance {
                    Some(instance) => match self.member_of_instance(instance).cloned() {
                        Some(current) if member_id.is_empty() || *member_id == current => current,
                        Some(_) => {
                            return Err(Error::FencedInstanceId {
                                group: self.group_id.clone(),
                                instance_id: instance.clone(),
                                member_id: member_id.clone(),
                            });
                        }
                        None => return Err(self.unknown(member_id)),
                    },
                    None => member_id.clone(),
                };
                match self.members.remove(&id) {
                    Some(_) => {
                        removed = true;
                        Ok(())
                    }
                    None => Err(self.unknown(&id)),
                }
            })
            .collect();
        if removed {
            self.after_removal();
        }
        answers
    }

    /// An offset commit of `member_id` at `generation` (Kafka's rules: a
    /// current member, its generation, not while the generation's
    /// assignments are being sent).
    pub fn check_commit(&self, member_id: &str, generation: i32) -> Result<()> {
        if !self.members.contains_key(member_id) {
            return Err(self.unknown(member_id));
        }
        self.check_generation(member_id, generation)?;
        if self.phase == ClassicPhase::CompletingRebalance {
            return Err(Error::RebalanceInProgress(self.group_id.clone()));
        }
        Ok(())
    }

    /// The topics the members subscribe to, read from the consumer
    /// protocol's subscription metadata; `None` when the group is not of
    /// protocol type `consumer` or a subscription cannot be read (then
    /// the group may consume any topic).
    pub fn subscribed_topics(&self) -> Option<Vec<String>> {
        if self.members.is_empty() {
            return Some(Vec::new());
        }
        if self.protocol_type != CONSUMER_PROTOCOL_TYPE {
            return None;
        }
        let mut topics = Vec::new();
        for m in self.members.values() {
            let metadata = match self.protocol.as_str() {
                "" => m
                    .protocols
                    .first()
                    .map(|(_, md)| md.as_slice())
                    .unwrap_or(&[]),
                p => m.metadata(p),
            };
            topics.extend(subscription_topics(metadata)?);
        }
        topics.sort();
        topics.dedup();
        Some(topics)
    }

    /// The topics a member subscribes to, when its metadata is a consumer
    /// protocol subscription.
    pub fn member_topics(&self, m: &Member) -> Vec<String> {
        if self.protocol_type != CONSUMER_PROTOCOL_TYPE {
            return Vec::new();
        }
        let metadata = match self.protocol.as_str() {
            "" => m
                .protocols
                .first()
                .map(|(_, md)| md.as_slice())
                .unwrap_or(&[]),
            p => m.metadata(p),
        };
        subscription_topics(metadata).unwrap_or_default()
    }

    /// What DescribeGroups shows.
    pub fn describe(&self) -> ClassicGroupDescription {
        ClassicGroupDescription {
            group_id: self.group_id.clone(),
            phase: self.phase,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
            leader: self.leader.clone(),
            members: self
                .members
                .iter()
                .map(|(id, m)| ClassicMemberDescription {
                    member_id: id.clone(),
                    group_instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: m.metadata(&self.protocol).to_vec(),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }
}

impl Member {
    /// The member's metadata for `protocol` (empty if it has none).
    fn metadata(&self, protocol: &str) -> &[u8] {
        self.protocols
            .iter()
            .find(|(n, _)| n == protocol)
            .map(|(_, m)| m.as_slice())
            .unwrap_or(&[])
    }
}

/// The topics of a Kafka consumer protocol subscription (version, then a
/// non-flexible array of strings), `None` if it does not parse.
pub(crate) fn subscription_topics(metadata: &[u8]) -> Option<Vec<String>> {
    let (_, rest) = metadata.split_first_chunk::<2>()?;
    let (count, mut rest) = rest.split_first_chunk::<4>()?;
    let count = usize::try_from(i32::from_be_bytes(*count)).ok()?;
    let mut topics = Vec::with_capacity(count.min(rest.len() / 2));
    for _ in 0..count {
        let (len, tail) = rest.split_first_chunk::<2>()?;
        let len = usize::try_from(i16::from_be_bytes(*len)).ok()?;
        if tail.len() < len {
            return None;
        }
        let (name, tail) = tail.split_at(len);
        topics.push(String::from_utf8(name.to_vec()).ok()?);
        rest = tail;
    }
    Some(topics)
}

#[cfg(test)]
#[path = "classic_state_tests.rs"]
mod tests;
