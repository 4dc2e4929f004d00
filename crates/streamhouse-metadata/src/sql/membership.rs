//! A consumer group's membership during one heartbeat, as plain data: the
//! heartbeat's argument checks, session expiry, joining, leaving and
//! refreshing a member, noticing changed subscribed topics, recomputing the
//! target assignment, and the answer to the member. The SQL around it is in
//! `heartbeat.rs`.

use std::collections::{BTreeMap, BTreeSet};

use crate::assignment::{
    ASSIGNORS, MemberInput, RANGE, UNIFORM, assign, assign_range, group_assignor,
};
use crate::error::{Error, Result};
use crate::types::{
    GroupAssignment, GroupHeartbeat, JOIN_GROUP_EPOCH, LEAVE_GROUP_EPOCH, TopicPartition,
};
use crate::validate_group_id;

/// A group member row during a heartbeat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MemberRow {
    pub member_epoch: i64,
    pub client_id: String,
    /// Subscribed topics, sorted, deduplicated and joined by `,`.
    pub subscription: String,
    pub session_timeout_ms: i64,
    pub last_heartbeat_ms: i64,
    pub target: BTreeSet<TopicPartition>,
    pub owned: BTreeSet<TopicPartition>,
    /// The server-side assignor it asked for.
    pub assignor: String,
    /// Changed by this heartbeat (to be written back).
    pub dirty: bool,
}

impl MemberRow {
    /// The subscribed topic names.
    fn topics(&self) -> impl Iterator<Item = String> + '_ {
        split_subscription(&self.subscription)
    }
}

/// A group's state during one heartbeat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct GroupState {
    pub group_id: String,
    /// The database clock when the group row was locked.
    pub now: i64,
    /// Bumped by every membership or subscription change.
    pub group_epoch: i64,
    /// The group epoch the members' targets were computed for.
    pub assignment_epoch: i64,
    /// The partition counts of the subscribed topics (those that existed)
    /// the members' targets were computed from.
    pub assignment_topics: BTreeMap<String, u32>,
    /// Live members by id.
    pub members: BTreeMap<String, MemberRow>,
    /// Members removed by this heartbeat (expired or left).
    pub gone: Vec<String>,
}

/// Checks a heartbeat's arguments.
pub(crate) fn validate_heartbeat(hb: &GroupHeartbeat) -> Result<()> {
    validate_group_id(&hb.group_id)?;
    if hb.session_timeout_ms <= 0 {
        return Err(Error::InvalidArgument {
            field: "session timeout",
            reason: format!("{} ms is not positive", hb.session_timeout_ms),
        });
    }
    if let Some(a) = hb.assignor.as_deref().filter(|a| !ASSIGNORS.contains(a)) {
        return Err(Error::InvalidArgument {
            field: "assignor",
            reason: format!("{a:?} is not one of {}", ASSIGNORS.join(", ")),
        });
    }
    if hb.member_epoch < LEAVE_GROUP_EPOCH {
        return Err(Error::InvalidArgument {
            field: "member epoch",
            reason: format!("{} is below -1", hb.member_epoch),
        });
    }
    Ok(())
}

/// A subscription as stored: sorted, deduplicated, joined by `,`.
pub(crate) fn join_subscription(topics: &[String]) -> String {
    let mut s = topics.to_vec();
    s.sort();
    s.dedup();
    s.join(",")
}

/// The topic names of a stored subscription.
pub(crate) fn split_subscription(subscription: &str) -> impl Iterator<Item = String> + '_ {
    subscription
        .split(',')
        .filter(|t| !t.is_empty())
        .map(str::to_string)
}

impl GroupState {
    /// Removes the members whose session expired by `now`.
    pub fn expire_members(&mut self) {
        let now = self.now;
        let expired: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| now - m.last_heartbeat_ms > m.session_timeout_ms)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            self.members.remove(&id);
            self.gone.push(id);
            self.group_epoch += 1;
        }
    }

    /// Leaves, joins or refreshes the heartbeat's member. Returns its id,
    /// or `None` when it left.
    pub fn apply_heartbeat(&mut self, hb: &GroupHeartbeat) -> Result<Option<String>> {
        let subscription = join_subscription(&hb.subscription);
        match hb.member_epoch {
            LEAVE_GROUP_EPOCH => {
                if self.members.remove(&hb.member_id).is_some() {
                    self.gone.push(hb.member_id.clone());
                    self.group_epoch += 1;
                }
                Ok(None)
            }
            JOIN_GROUP_EPOCH => {
                self.group_epoch += 1;
                let id = if hb.member_id.is_empty() {
                    let client = if hb.client_id.is_empty() {
                        "consumer"
                    } else {
                        hb.client_id.as_str()
                    };
                    format!("{client}-{}-{}", self.group_epoch, self.now)
                } else {
                    hb.member_id.clone()
                };
                let member = MemberRow {
                    member_epoch: self.group_epoch,
                    client_id: hb.client_id.clone(),
                    subscription,
                    session_timeout_ms: hb.session_timeout_ms,
                    last_heartbeat_ms: self.now,
                    target: BTreeSet::new(),
                    owned: hb.owned.iter().cloned().collect(),
                    assignor: hb.assignor.clone().unwrap_or_else(|| UNIFORM.to_string()),
                    dirty: true,
                };
                self.members.insert(id.clone(), member);
                Ok(Some(id))
            }
            epoch => {
                let m =
                    self.members
                        .get_mut(&hb.member_id)
                        .ok_or_else(|| Error::UnknownMember {
                            group: self.group_id.clone(),
                            member_id: hb.member_id.clone(),
                        })?;
                // An older epoch is a delayed or repeated heartbeat: what it
                // reports as owned may since have been released and handed
                // to another member, so it changes nothing.
                if i64::from(epoch) != m.member_epoch {
                    return Err(Error::FencedMemberEpoch {
                        group: self.group_id.clone(),
                        member_id: hb.member_id.clone(),
                        epoch,
                        current: m.member_epoch as i32,
                    });
                }
                if m.subscription != subscription {
                    m.subscription = subscription;
                    self.group_epoch += 1;
                }
                if let Some(a) = hb.assignor.as_ref().filter(|a| **a != m.assignor) {
                    m.assignor = a.clone();
                    self.group_epoch += 1;
                }
                m.owned = hb.owned.iter().cloned().collect();
                m.session_timeout_ms = hb.session_timeout_ms;
                m.last_heartbeat_ms = self.now;
                m.dirty = true;
                Ok(Some(hb.member_id.clone()))
            }
        }
    }

    /// Compares the partition counts of the subscribed topics that exist
    /// now with those the targets were computed from: partitions added to a
    /// topic, or a subscribed topic created (or deleted) since, start a new
    /// group epoch, so the targets are recomputed without waiting for a
    /// membership change.
    pub fn note_topics(&mut self, topics: &BTreeMap<String, u32>) {
        if *topics != self.assignment_topics && !self.needs_assignment() {
            self.group_epoch += 1;
        }
    }

    /// Whether membership, subscriptions or the subscribed topics changed
    /// since the targets were computed.
    pub fn needs_assignment(&self) -> bool {
        self.group_epoch > self.assignment_epoch
    }

    /// Every topic some member subscribes to.
    pub fn subscribed_topics(&self) -> BTreeSet<String> {
        self.members.values().flat_map(MemberRow::topics).collect()
    }

    /// Recomputes every member's target from the partition counts of the
    /// subscribed topics that exist, with the assignor most members ask
    /// for.
    pub fn reassign(&mut self, topics: &BTreeMap<String, u32>) {
        let inputs: Vec<MemberInput> = self
            .members
            .iter()
            .map(|(id, m)| MemberInput {
                member_id: id.clone(),
                subscription: m.topics().collect(),
                previous: m.target.clone(),
            })
            .collect();
        let assignor = group_assignor(self.members.values().map(|m| m.assignor.as_str()));
        let targets = if assignor == RANGE {
            assign_range(&inputs, topics)
        } else {
            assign(&inputs, topics)
        };
        for (id, target) in targets {
            let m = self.members.get_mut(&id).expect("assigned member exists");
            if m.target != target {
                m.target = target;
                m.dirty = true;
            }
        }
        self.assignment_epoch = self.group_epoch;
        self.assignment_topics = topics.clone();
    }

    /// The answer to member `id`: the partitions of its target that no
    /// other member still owns, and those it must wait for. Records what it
    /// is given as owned.
    pub fn answer(&mut self, id: &str) -> GroupAssignment {
        let others: BTreeSet<TopicPartition> = self
            .members
            .iter()
            .filter(|(other, _)| *other != id)
            .flat_map(|(_, m)| m.owned.iter().cloned())
            .collect();
        let group_epoch = self.group_epoch;
        let m = self.members.get_mut(id).expect("member is present");
        let assigned: BTreeSet<TopicPartition> = m.target.difference(&others).cloned().collect();
        let pending: Vec<TopicPartition> = m.target.intersection(&others).cloned().collect();
        // A new epoch marks a new assignment for the member; it commits
        // offsets with the epoch it was last given.
        if assigned != m.owned && m.member_epoch < group_epoch {
            m.member_epoch = group_epoch;
        }
        // Until its next heartbeat reports what it released, the member
        // owns what it reported plus what it is given now.
        m.owned.extend(assigned.iter().cloned());
        m.dirty = true;
        GroupAssignment {
            member_id: id.to_string(),
            member_epoch: m.member_epoch as i32,
            group_epoch: group_epoch as i32,
            assigned: assigned.into_iter().collect(),
            pending,
        }
    }

    /// The answer to a member that left.
    pub fn left(&self, member_id: String) -> GroupAssignment {
        GroupAssignment {
            member_id,
            member_epoch: LEAVE_GROUP_EPOCH,
            group_epoch: self.group_epoch as i32,
            assigned: Vec::new(),
            pending: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(now: i64) -> GroupState {
        GroupState {
            group_id: "g".into(),
            now,
            group_epoch: 0,
            assignment_epoch: 0,
            assignment_topics: BTreeMap::new(),
            members: BTreeMap::new(),
            gone: Vec::new(),
        }
    }

    fn heartbeat(member_id: &str, member_epoch: i32, topics: &[&str]) -> GroupHeartbeat {
        GroupHeartbeat {
            group_id: "g".into(),
            member_id: member_id.into(),
            member_epoch,
            client_id: "app".into(),
            subscription: topics.iter().map(|t| t.to_string()).collect(),
            owned: Vec::new(),
            session_timeout_ms: 1_000,
            assignor: None,
        }
    }

    #[test]
    fn heartbeat_arguments_are_checked() {
        assert!(validate_heartbeat(&heartbeat("m", 0, &["t"])).is_ok());
        let mut bad = heartbeat("m", -2, &["t"]);
        assert!(matches!(
            validate_heartbeat(&bad),
            Err(Error::InvalidArgument {
                field: "member epoch",
                ..
            })
        ));
        bad.member_epoch = 0;
        bad.session_timeout_ms = 0;
        assert!(matches!(
            validate_heartbeat(&bad),
            Err(Error::InvalidArgument {
                field: "session timeout",
                ..
            })
        ));
        bad.session_timeout_ms = 1;
        bad.group_id = String::new();
        assert!(validate_heartbeat(&bad).is_err());
    }

    #[test]
    fn subscriptions_are_stored_sorted_and_unique() {
        let topics = ["b".to_string(), "a".to_string(), "b".to_string()];
        assert_eq!(join_subscription(&topics), "a,b");
        assert_eq!(split_subscription("a,b").collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(split_subscription("").count(), 0);
    }

    #[test]
    fn joining_names_the_member_and_bumps_the_group_epoch() {
        let mut s = state(77);
        let id = s
            .apply_heartbeat(&heartbeat("", JOIN_GROUP_EPOCH, &["t", "t"]))
            .unwrap();
        assert_eq!(id.as_deref(), Some("app-1-77"));
        let m = &s.members["app-1-77"];
        assert_eq!(
            (m.member_epoch, m.subscription.as_str(), m.dirty),
            (1, "t", true)
        );
        assert!(s.needs_assignment());
        // A member may also join under an id it chose.
        let id = s
            .apply_heartbeat(&heartbeat("mine", JOIN_GROUP_EPOCH, &["t"]))
            .unwrap();
        assert_eq!(id.as_deref(), Some("mine"));
        assert_eq!(s.group_epoch, 2);
    }

    #[test]
    fn a_delayed_heartbeat_with_an_older_epoch_changes_nothing() {
        let mut s = state(0);
        s.apply_heartbeat(&heartbeat("a", JOIN_GROUP_EPOCH, &["t"]))
            .unwrap();
        s.reassign(&BTreeMap::from([("t".to_string(), 2)]));
        let a = s.answer("a");
        let mut delayed = heartbeat("a", a.member_epoch, &["t"]);
        delayed.owned = a.assigned.clone();
        s.apply_heartbeat(&heartbeat("b", JOIN_GROUP_EPOCH, &["t"]))
            .unwrap();
        s.reassign(&BTreeMap::from([("t".to_string(), 2)]));
        let a = s.answer("a");
        assert_eq!((a.member_epoch, a.assigned.len()), (2, 1));
        let mut released = heartbeat("a", 2, &["t"]);
        released.owned = a.assigned.clone();
        s.apply_heartbeat(&released).unwrap();
        let before = s.clone();
        assert!(matches!(
            s.apply_heartbeat(&delayed),
            Err(Error::FencedMemberEpoch {
                epoch: 1,
                current: 2,
                ..
            })
        ));
        assert_eq!(s, before);
        assert_eq!(s.members["a"].owned.len(), 1);
    }

    #[test]
    fn changed_topics_start_a_new_group_epoch() {
        let mut s = state(0);
        s.apply_heartbeat(&heartbeat("a", JOIN_GROUP_EPOCH, &["t", "u"]))
            .unwrap();
        let two = BTreeMap::from([("t".to_string(), 2)]);
        s.note_topics(&two);
        assert_eq!(s.group_epoch, 1, "already a new epoch: no second bump");
        s.reassign(&two);
        s.note_topics(&two);
        assert!(!s.needs_assignment());
        // Partitions added.
        let four = BTreeMap::from([("t".to_string(), 4)]);
        s.note_topics(&four);
        assert_eq!(s.group_epoch, 2);
        s.reassign(&four);
        assert_eq!(s.members["a"].target.len(), 4);
        assert_eq!(s.assignment_topics, four);
        // A subscribed topic created.
        let created = BTreeMap::from([("t".to_string(), 4), ("u".to_string(), 1)]);
        s.note_topics(&created);
        assert!(s.needs_assignment());
        s.reassign(&created);
        assert_eq!(s.members["a"].target.len(), 5);
    }

    #[test]
    fn unknown_and_future_epochs_are_refused() {
        let mut s = state(0);
        s.apply_heartbeat(&heartbeat("m", JOIN_GROUP_EPOCH, &["t"]))
            .unwrap();
        assert!(matches!(
            s.apply_heartbeat(&heartbeat("other", 1, &["t"])),
            Err(Error::UnknownMember { .. })
        ));
        assert!(matches!(
            s.apply_heartbeat(&heartbeat("m", 5, &["t"])),
            Err(Error::FencedMemberEpoch {
                epoch: 5,
                current: 1,
                ..
            })
        ));
    }

    #[test]
    fn only_a_subscription_change_bumps_the_group_epoch() {
        let mut s = state(0);
        s.apply_heartbeat(&heartbeat("m", JOIN_GROUP_EPOCH, &["t"]))
            .unwrap();
        s.now = 500;
        s.apply_heartbeat(&heartbeat("m", 1, &["t"])).unwrap();
        assert_eq!(s.group_epoch, 1);
        assert_eq!(s.members["m"].last_heartbeat_ms, 500);
        s.apply_heartbeat(&heartbeat("m", 1, &["t", "u"])).unwrap();
        assert_eq!(s.group_epoch, 2);
        assert_eq!(
            s.subscribed_topics(),
            BTreeSet::from(["t".into(), "u".into()])
        );
    }

    #[test]
    fn expired_and_leaving_members_are_gone() {
        let mut s = state(0);
        for id in ["a", "b", "c"] {
            s.apply_heartbeat(&heartbeat(id, JOIN_GROUP_EPOCH, &["t"]))
                .unwrap();
        }
        s.now = 900;
        s.apply_heartbeat(&heartbeat("a", 1, &["t"])).unwrap();
        s.now = 1_500;
        s.expire_members();
        assert_eq!(s.gone, ["b", "c"]);
        assert_eq!(s.group_epoch, 5);
        assert_eq!(
            s.apply_heartbeat(&heartbeat("a", LEAVE_GROUP_EPOCH, &[]))
                .unwrap(),
            None
        );
        assert_eq!(s.gone, ["b", "c", "a"]);
        assert_eq!(s.group_epoch, 6);
        // Leaving twice changes nothing.
        s.apply_heartbeat(&heartbeat("a", LEAVE_GROUP_EPOCH, &[]))
            .unwrap();
        assert_eq!(s.group_epoch, 6);
        assert_eq!(s.left("a".into()).member_epoch, LEAVE_GROUP_EPOCH);
    }

    #[test]
    fn partitions_are_handed_over_only_once_released() {
        let mut s = state(0);
        s.apply_heartbeat(&heartbeat("a", JOIN_GROUP_EPOCH, &["t"]))
            .unwrap();
        let topics = BTreeMap::from([("t".to_string(), 2)]);
        s.reassign(&topics);
        assert_eq!(s.assignment_epoch, 1);
        let a = s.answer("a");
        assert_eq!((a.assigned.len(), a.member_epoch), (2, 1));

        s.apply_heartbeat(&heartbeat("b", JOIN_GROUP_EPOCH, &["t"]))
            .unwrap();
        assert!(s.needs_assignment());
        s.reassign(&topics);
        let b = s.answer("b");
        // `a` still owns both partitions: `b` waits for its share.
        assert!(b.assigned.is_empty());
        assert_eq!(b.pending.len(), 1);
        let given = b.pending[0].clone();

        // `a` learns its smaller target with a new epoch, then releases.
        let a = s.answer("a");
        assert_eq!(a.member_epoch, 2);
        assert_eq!(a.assigned.len(), 1);
        assert_ne!(a.assigned, vec![given.clone()]);
        let mut released = heartbeat("a", 2, &["t"]);
        released.owned = a.assigned.clone();
        s.apply_heartbeat(&released).unwrap();
        let b = s.answer("b");
        assert_eq!(b.assigned, vec![given.clone()]);
        assert_eq!(b.member_epoch, 2);
        assert!(s.members["b"].owned.contains(&given));
        assert!(!s.members["a"].owned.contains(&given));
    }

    #[test]
    fn the_group_uses_the_assignor_its_members_ask_for() {
        let mut s = state(0);
        for id in ["a", "b"] {
            let mut join = heartbeat(id, JOIN_GROUP_EPOCH, &["t"]);
            join.assignor = Some(RANGE.into());
            s.apply_heartbeat(&join).unwrap();
        }
        s.reassign(&BTreeMap::from([("t".to_string(), 4)]));
        let target = |s: &GroupState, id: &str| -> Vec<u32> {
            s.members[id].target.iter().map(|tp| tp.partition).collect()
        };
        assert_eq!((target(&s, "a"), target(&s, "b")), (vec![0, 1], vec![2, 3]));
        // Asking for another assignor is a change of the group.
        let epoch = s.group_epoch;
        let mut switch = heartbeat("b", s.members["b"].member_epoch as i32, &["t"]);
        switch.assignor = Some(UNIFORM.into());
        s.apply_heartbeat(&switch).unwrap();
        assert_eq!(s.group_epoch, epoch + 1);
        // Naming none keeps what was asked for.
        let same = heartbeat("b", s.members["b"].member_epoch as i32, &["t"]);
        s.apply_heartbeat(&same).unwrap();
        assert_eq!(
            (s.group_epoch, s.members["b"].assignor.as_str()),
            (epoch + 1, UNIFORM)
        );
        let mut bogus = heartbeat("c", JOIN_GROUP_EPOCH, &["t"]);
        bogus.assignor = Some("sticky".into());
        assert!(matches!(
            validate_heartbeat(&bogus),
            Err(Error::InvalidArgument {
                field: "assignor",
                ..
            })
        ));
    }
}
