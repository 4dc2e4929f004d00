//! Group administration over Kafka: ListGroups (with the state and type
//! filters), DescribeGroups, DeleteGroups and OffsetDelete, for classic
//! groups, server-side consumer groups and groups with only committed
//! offsets alike.

use std::ops::RangeInclusive;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{
    DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest, DescribeGroupsResponse,
    GroupId, ListGroupsRequest, ListGroupsResponse, OffsetDeleteRequest, OffsetDeleteResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::Broker;
use super::errors::group_code;

pub(super) const LIST_VERSIONS: RangeInclusive<i16> = 0..=5;
pub(super) const DESCRIBE_VERSIONS: RangeInclusive<i16> = 0..=5;
pub(super) const DELETE_VERSIONS: RangeInclusive<i16> = 0..=2;
pub(super) const OFFSET_DELETE_VERSIONS: RangeInclusive<i16> = 0..=0;

fn s(value: impl Into<String>) -> StrBytes {
    StrBytes::from_string(value.into())
}

pub(super) async fn list(broker: &Broker, r: ListGroupsRequest) -> ListGroupsResponse {
    let groups = match broker.metadata.list_group_states().await {
        Ok(g) => g,
        Err(e) => return ListGroupsResponse::default().with_error_code(group_code(&e)),
    };
    let wanted = |filter: &[StrBytes], value: &str| {
        filter.is_empty() || filter.iter().any(|f| f.eq_ignore_ascii_case(value))
    };
    ListGroupsResponse::default().with_groups(
        groups
            .into_iter()
            .filter(|g| {
                wanted(&r.states_filter, &g.state) && wanted(&r.types_filter, &g.group_type)
            })
            .map(|g| {
                ListedGroup::default()
                    .with_group_id(GroupId(s(g.group_id)))
                    .with_protocol_type(s(g.protocol_type))
                    .with_group_state(s(g.state))
                    .with_group_type(s(g.group_type))
            })
            .collect(),
    )
}

/// One group as DescribeGroups shows it: a classic group with its
/// members, a server-side group with its members' ids and client ids, an
/// unknown group as `Dead` (as Kafka does).
async fn describe_one(broker: &Broker, group: &GroupId, version: i16) -> DescribedGroup {
    let entry = DescribedGroup::default().with_group_id(group.clone());
    match broker.metadata.describe_classic_group(group).await {
        Ok(Some(g)) if !g.members.is_empty() || g.generation > 0 => {
            return entry
                .with_group_state(s(g.phase.name()))
                .with_protocol_type(s(g.protocol_type))
                .with_protocol_data(s(g.protocol_name))
                .with_members(
                    g.members
                        .into_iter()
                        .map(|m| {
                            DescribedGroupMember::default()
                                .with_member_id(s(m.member_id))
                                .with_group_instance_id(if version >= 4 {
                                    m.group_instance_id.map(s)
                                } else {
                                    None
                                })
                                .with_client_id(s(m.client_id))
                                .with_client_host(s(m.client_host))
                                .with_member_metadata(Bytes::from(m.metadata))
                                .with_member_assignment(Bytes::from(m.assignment))
                        })
                        .collect(),
                );
        }
        Ok(_) => {}
        Err(e) => return entry.with_error_code(group_code(&e)),
    }
    match broker.metadata.describe_group(group).await {
        Ok(d) => entry
            .with_group_state(s(if d.members.is_empty() {
                "Empty"
            } else {
                "Stable"
            }))
            .with_protocol_type(s("consumer"))
            .with_members(
                d.members
                    .into_iter()
                    .map(|m| {
                        DescribedGroupMember::default()
                            .with_member_id(s(m.member_id))
                            .with_client_id(s(m.client_id))
                    })
                    .collect(),
            ),
        Err(streamhouse_metadata::Error::GroupNotFound(_)) => entry.with_group_state(s("Dead")),
        Err(e) => entry.with_error_code(group_code(&e)),
    }
}

pub(super) async fn describe(
    broker: &Broker,
    r: DescribeGroupsRequest,
    version: i16,
) -> DescribeGroupsResponse {
    let mut groups = Vec::with_capacity(r.groups.len());
    if !DESCRIBE_VERSIONS.contains(&version) {
        let refused = ResponseError::UnsupportedVersion.code();
        return DescribeGroupsResponse::default().with_groups(
            r.groups
                .into_iter()
                .map(|g| {
                    DescribedGroup::default()
                        .with_group_id(g)
                        .with_error_code(refused)
                })
                .collect(),
        );
    }
    for g in &r.groups {
        groups.push(describe_one(broker, g, version).await);
    }
    DescribeGroupsResponse::default().with_groups(groups)
}

pub(super) async fn delete(broker: &Broker, r: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let mut results = Vec::with_capacity(r.groups_names.len());
    for g in r.groups_names {
        let code = match broker.metadata.delete_group(&g).await {
            Ok(()) => 0,
            Err(e) => group_code(&e),
        };
        results.push(
            DeletableGroupResult::default()
                .with_group_id(g)
                .with_error_code(code),
        );
    }
    DeleteGroupsResponse::default().with_results(results)
}

pub(super) async fn offset_delete(broker: &Broker, r: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let mut partitions = Vec::new();
    for t in &r.topics {
        for p in &t.partitions {
            // A negative partition index cannot have offsets: asked as one
            // that does not exist.
            partitions.push((
                t.name.0.to_string(),
                u32::try_from(p.partition_index).unwrap_or(u32::MAX),
            ));
        }
    }
    let answers = match broker
        .metadata
        .delete_group_offsets(&r.group_id, &partitions)
        .await
    {
        Ok(a) => a,
        Err(e) => return OffsetDeleteResponse::default().with_error_code(group_code(&e)),
    };
    let mut answers = answers.into_iter();
    OffsetDeleteResponse::default().with_topics(
        r.topics
            .iter()
            .map(|t| {
                OffsetDeleteResponseTopic::default()
                    .with_name(t.name.clone())
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                let code = match answers.next() {
                                    Some(Ok(())) => 0,
                                    Some(Err(e)) => group_code(&e),
                                    None => ResponseError::UnknownServerError.code(),
                                };
                                OffsetDeleteResponsePartition::default()
                                    .with_partition_index(p.partition_index)
                                    .with_error_code(code)
                            })
                            .collect(),
                    )
            })
            .collect(),
    )
}
