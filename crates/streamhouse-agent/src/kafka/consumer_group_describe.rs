//! ConsumerGroupDescribe (KIP-848): the groups of the server-side
//! coordinator as the store describes them, members of every kind (Kafka
//! and native) alike, their assignments by topic id ([`topic_ids`]).
//!
//! The store recomputes the target assignment in the heartbeat that starts
//! a new group epoch, so the assignment epoch reported is the group epoch.
//! The state is `Empty` without members, `Stable` when every member owns
//! exactly its target, `Reconciling` otherwise.

use std::collections::HashMap;
use std::ops::RangeInclusive;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::consumer_group_describe_response::{
    Assignment, DescribedGroup, Member, TopicPartitions,
};
use kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, GroupId, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use streamhouse_metadata::assignment::group_assignor;
use streamhouse_metadata::{GroupDescription, GroupMember, TopicPartition};
use uuid::Uuid;

use super::Broker;
use super::consumer_groups::by_topic_id;
use super::topic_ids::{self, topic_uuid};

/// ConsumerGroupDescribe versions served.
pub(super) const VERSIONS: RangeInclusive<i16> = 0..=1;

/// A member of the consumer (KIP-848) protocol, as v1 reports it.
const CONSUMER_MEMBER: i8 = 1;

/// The group's state name, as Kafka spells it.
fn state(group: &GroupDescription) -> &'static str {
    if group.members.is_empty() {
        "Empty"
    } else if group.members.iter().all(|m| {
        let mut owned = m.owned.clone();
        let mut target = m.target.clone();
        owned.sort();
        target.sort();
        owned == target
    }) {
        "Stable"
    } else {
        "Reconciling"
    }
}

fn assignment(partitions: &[TopicPartition], ids: &HashMap<String, Uuid>) -> Assignment {
    Assignment::default().with_topic_partitions(
        by_topic_id(partitions, ids)
            .into_iter()
            .map(|(id, name, ps)| {
                TopicPartitions::default()
                    .with_topic_id(id)
                    .with_topic_name(TopicName(StrBytes::from_string(name)))
                    .with_partitions(ps)
            })
            .collect(),
    )
}

fn member(m: GroupMember, ids: &HashMap<String, Uuid>) -> Member {
    Member::default()
        .with_member_id(StrBytes::from_string(m.member_id))
        .with_member_epoch(m.member_epoch)
        .with_client_id(StrBytes::from_string(m.client_id))
        .with_subscribed_topic_names(
            m.subscription
                .into_iter()
                .map(|t| TopicName(StrBytes::from_string(t)))
                .collect(),
        )
        .with_assignment(assignment(&m.owned, ids))
        .with_target_assignment(assignment(&m.target, ids))
        .with_member_type(CONSUMER_MEMBER)
}

/// One group's entry, from its description.
fn described(group: GroupDescription, ids: &HashMap<String, Uuid>) -> DescribedGroup {
    DescribedGroup::default()
        .with_group_id(GroupId(StrBytes::from_string(group.group_id.clone())))
        .with_group_state(StrBytes::from_static_str(state(&group)))
        .with_group_epoch(group.group_epoch)
        .with_assignment_epoch(group.group_epoch)
        .with_assignor_name(StrBytes::from_static_str(group_assignor(
            group.members.iter().map(|m| m.assignor.as_str()),
        )))
        .with_members(group.members.into_iter().map(|m| member(m, ids)).collect())
}

fn refused(group: GroupId, code: i16, message: String) -> DescribedGroup {
    DescribedGroup::default()
        .with_group_id(group)
        .with_error_code(code)
        .with_error_message(Some(StrBytes::from_string(message)))
}

pub(super) async fn handle(
    broker: &Broker,
    request: ConsumerGroupDescribeRequest,
) -> ConsumerGroupDescribeResponse {
    let ids: Result<HashMap<String, Uuid>, _> = topic_ids::by_uuid(broker).await.map(|topics| {
        topics
            .values()
            .map(|t| (t.name.clone(), topic_uuid(t)))
            .collect()
    });
    let mut groups = Vec::with_capacity(request.group_ids.len());
    for group in request.group_ids {
        if group.is_empty() {
            groups.push(refused(
                group,
                ResponseError::InvalidGroupId.code(),
                "the group id is empty".into(),
            ));
            continue;
        }
        let ids = match &ids {
            Ok(ids) => ids,
            Err(e) => {
                groups.push(refused(
                    group,
                    ResponseError::CoordinatorNotAvailable.code(),
                    e.to_string(),
                ));
                continue;
            }
        };
        groups.push(match broker.metadata.describe_group(&group).await {
            Ok(g) => described(g, ids),
            Err(e @ streamhouse_metadata::Error::GroupNotFound(_)) => {
                refused(group, ResponseError::GroupIdNotFound.code(), e.to_string())
            }
            Err(e @ streamhouse_metadata::Error::InvalidArgument { .. }) => {
                refused(group, ResponseError::InvalidGroupId.code(), e.to_string())
            }
            Err(e) => refused(
                group,
                ResponseError::CoordinatorNotAvailable.code(),
                e.to_string(),
            ),
        });
    }
    ConsumerGroupDescribeResponse::default().with_groups(groups)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn member_of(id: &str, owned: &[u32], target: &[u32]) -> GroupMember {
        GroupMember {
            member_id: id.into(),
            client_id: "c".into(),
            member_epoch: 3,
            subscription: vec!["t".into()],
            owned: owned.iter().map(|p| TopicPartition::new("t", *p)).collect(),
            target: target
                .iter()
                .map(|p| TopicPartition::new("t", *p))
                .collect(),
            heartbeat_age: Duration::ZERO,
            session_timeout: Duration::from_secs(45),
            assignor: "uniform".into(),
        }
    }

    fn group(members: Vec<GroupMember>) -> GroupDescription {
        GroupDescription {
            group_id: "g".into(),
            group_epoch: 7,
            members,
            offsets: Vec::new(),
        }
    }

    #[test]
    fn states_follow_the_members() {
        assert_eq!(state(&group(vec![])), "Empty");
        assert_eq!(
            state(&group(vec![member_of("a", &[1, 0], &[0, 1])])),
            "Stable"
        );
        assert_eq!(
            state(&group(vec![
                member_of("a", &[0, 1], &[0]),
                member_of("b", &[], &[1])
            ])),
            "Reconciling"
        );
    }

    #[test]
    fn members_carry_assignments_by_topic_id() {
        let ids = HashMap::from([("t".to_string(), Uuid::from_u128(9))]);
        let g = described(group(vec![member_of("a", &[0], &[0, 2])]), &ids);
        assert_eq!((g.group_epoch, g.assignment_epoch), (7, 7));
        assert_eq!(g.assignor_name.as_str(), "uniform");
        let m = &g.members[0];
        assert_eq!(m.member_type, CONSUMER_MEMBER);
        assert_eq!(
            m.assignment.topic_partitions[0].topic_id,
            Uuid::from_u128(9)
        );
        assert_eq!(m.assignment.topic_partitions[0].partitions, [0]);
        assert_eq!(m.target_assignment.topic_partitions[0].partitions, [0, 2]);
        assert_eq!(m.subscribed_topic_names[0].0.as_str(), "t");
    }
}
