//! OffsetCommit and OffsetFetch by group id: the committed offsets gRPC
//! clients use too. A commit without a member (generation -1 or an empty
//! member id) is a standalone commit, allowed while the group has no live
//! members; a commit with a member id is checked against the group's
//! members and their epochs, as for gRPC members, or, in a classic
//! (JoinGroup) group, against its members and generation.
//!
//! From v9 (KIP-848) a commit whose member epoch is not the member's
//! current one, or that names a partition the member no longer owns, is
//! answered STALE_MEMBER_EPOCH, as Kafka answers consumer-protocol members
//! (retriable: the member commits again once its heartbeat brought the
//! new epoch); older versions answer FENCED_MEMBER_EPOCH. OffsetFetch v9
//! checks a member id and epoch the same way (UNKNOWN_MEMBER_ID,
//! STALE_MEMBER_EPOCH); without a member (null id, epoch -1) the offsets
//! are read as before.

use std::collections::HashMap;
use std::ops::RangeInclusive;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use streamhouse_metadata::{CommittedOffset, OffsetCommit};

use super::Broker;
use super::errors::{group_code, kafka_code};
use crate::error::bounded;

pub(super) const COMMIT_VERSIONS: RangeInclusive<i16> = 2..=9;
pub(super) const FETCH_VERSIONS: RangeInclusive<i16> = 1..=9;

/// The first OffsetCommit and OffsetFetch version of KIP-848 members.
const MEMBER_EPOCH_VERSION: i16 = 9;

/// The Kafka code of a failed commit at `version`.
fn commit_code(e: &streamhouse_metadata::Error, version: i16) -> i16 {
    use streamhouse_metadata::Error as M;
    match e {
        M::UnknownMember { .. }
        | M::IllegalGeneration { .. }
        | M::RebalanceInProgress(_)
        | M::FencedInstanceId { .. } => group_code(e),
        M::FencedMemberEpoch { .. } | M::NotPartitionOwner { .. }
            if version >= MEMBER_EPOCH_VERSION =>
        {
            ResponseError::StaleMemberEpoch.code()
        }
        M::FencedMemberEpoch { .. } | M::NotPartitionOwner { .. } => {
            kafka_code(streamhouse_proto::ErrorCode::FencedMemberEpoch)
        }
        // Members are live: a commit without a member cannot go in.
        M::GroupNotEmpty(_) => ResponseError::UnknownMemberId.code(),
        M::TopicNotFound(_) | M::PartitionNotFound { .. } => {
            ResponseError::UnknownTopicOrPartition.code()
        }
        M::InvalidArgument { .. } | M::Invalid(_) => ResponseError::InvalidCommitOffsetSize.code(),
        _ => ResponseError::UnknownServerError.code(),
    }
}

pub(super) async fn commit(
    broker: &Broker,
    request: OffsetCommitRequest,
    version: i16,
) -> OffsetCommitResponse {
    let group = request.group_id.0.to_string();
    let mut offsets = Vec::new();
    let mut early: HashMap<(TopicName, i32), i16> = HashMap::new();
    for t in &request.topics {
        for p in &t.partitions {
            match u32::try_from(p.partition_index) {
                Ok(partition) => offsets.push(OffsetCommit {
                    topic: t.name.0.to_string(),
                    partition,
                    offset: p.committed_offset,
                    metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                }),
                Err(_) => {
                    early.insert(
                        (t.name.clone(), p.partition_index),
                        ResponseError::UnknownTopicOrPartition.code(),
                    );
                }
            }
        }
    }
    let member = (!request.member_id.is_empty() && request.generation_id_or_member_epoch >= 0)
        .then(|| {
            (
                request.member_id.as_str(),
                request.generation_id_or_member_epoch,
            )
        });
    let code = if group.is_empty() {
        ResponseError::InvalidGroupId.code()
    } else {
        match broker
            .metadata
            .commit_group_offsets(&group, member, &offsets)
            .await
        {
            Ok(()) => 0,
            Err(e) => {
                tracing::info!(group = %bounded(&group), error = %e, "Kafka offset commit failed");
                commit_code(&e, version)
            }
        }
    };
    OffsetCommitResponse::default().with_topics(
        request
            .topics
            .iter()
            .map(|t| {
                OffsetCommitResponseTopic::default()
                    .with_name(t.name.clone())
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                OffsetCommitResponsePartition::default()
                                    .with_partition_index(p.partition_index)
                                    .with_error_code(
                                        early
                                            .get(&(t.name.clone(), p.partition_index))
                                            .copied()
                                            .unwrap_or(code),
                                    )
                            })
                            .collect(),
                    )
            })
            .collect(),
    )
}

/// One group's committed offsets: those asked for (`None`: all), with
/// offset -1 and empty metadata where nothing was committed.
async fn group_offsets(
    broker: &Broker,
    group: &str,
    topics: Option<Vec<(TopicName, Vec<i32>)>>,
) -> Result<Vec<(TopicName, Vec<(i32, i64, String)>)>, i16> {
    let committed: Vec<CommittedOffset> = broker
        .metadata
        .fetch_offsets(group)
        .await
        .map_err(|e| commit_code(&e, 0))?;
    let mut by_partition: HashMap<(String, u32), (i64, String)> = HashMap::new();
    for c in committed {
        by_partition.insert(
            (c.topic, c.partition),
            (c.offset, c.metadata.unwrap_or_default()),
        );
    }
    Ok(match topics {
        Some(topics) => topics
            .into_iter()
            .map(|(name, partitions)| {
                let entries = partitions
                    .into_iter()
                    .map(|p| {
                        let found = u32::try_from(p)
                            .ok()
                            .and_then(|q| by_partition.get(&(name.0.to_string(), q)));
                        match found {
                            Some((offset, metadata)) => (p, *offset, metadata.clone()),
                            None => (p, -1, String::new()),
                        }
                    })
                    .collect();
                (name, entries)
            })
            .collect(),
        None => {
            let mut topics: HashMap<String, Vec<(i32, i64, String)>> = HashMap::new();
            for ((topic, partition), (offset, metadata)) in by_partition {
                topics
                    .entry(topic)
                    .or_default()
                    .push((partition as i32, offset, metadata));
            }
            let mut out: Vec<_> = topics
                .into_iter()
                .map(|(t, mut ps)| {
                    ps.sort();
                    (TopicName(StrBytes::from_string(t)), ps)
                })
                .collect();
            out.sort_by(|a, b| a.0.cmp(&b.0));
            out
        }
    })
}

/// Checks the member an OffsetFetch v9 names: it must be a live member of
/// the group with that epoch. No member (a null id and a negative epoch,
/// as admin clients send) is not checked.
async fn check_member(
    broker: &Broker,
    group: &str,
    member: Option<(&str, i32)>,
) -> Result<(), i16> {
    let (id, epoch) = match member {
        None => return Ok(()),
        Some((id, epoch)) if id.is_empty() && epoch < 0 => return Ok(()),
        Some(m) => m,
    };
    let described = match broker.metadata.describe_group(group).await {
        Ok(g) => g,
        Err(streamhouse_metadata::Error::GroupNotFound(_)) => {
            return Err(ResponseError::UnknownMemberId.code());
        }
        Err(e) => return Err(fetch_member_code(&e)),
    };
    fetch_member_check(&described.members, id, epoch)
}

/// The code of a failed member check of OffsetFetch v9.
fn fetch_member_check(
    members: &[streamhouse_metadata::GroupMember],
    id: &str,
    epoch: i32,
) -> Result<(), i16> {
    match members.iter().find(|m| m.member_id == id) {
        None => Err(ResponseError::UnknownMemberId.code()),
        Some(m) if m.member_epoch != epoch => Err(ResponseError::StaleMemberEpoch.code()),
        Some(_) => Ok(()),
    }
}

fn fetch_member_code(e: &streamhouse_metadata::Error) -> i16 {
    match e {
        streamhouse_metadata::Error::InvalidArgument { .. } => ResponseError::InvalidGroupId.code(),
        _ => ResponseError::CoordinatorNotAvailable.code(),
    }
}

pub(super) async fn fetch(
    broker: &Broker,
    request: OffsetFetchRequest,
    version: i16,
) -> OffsetFetchResponse {
    if version >= 8 {
        let mut groups = Vec::with_capacity(request.groups.len());
        for g in request.groups {
            let topics = g.topics.map(|ts| {
                ts.into_iter()
                    .map(|t| (t.name, t.partition_indexes))
                    .collect()
            });
            let entry = OffsetFetchResponseGroup::default().with_group_id(g.group_id.clone());
            let member = g.member_id.as_ref().map(|id| (id.as_str(), g.member_epoch));
            if let Err(code) = check_member(broker, &g.group_id, member).await {
                groups.push(entry.with_error_code(code));
                continue;
            }
            groups.push(match group_offsets(broker, &g.group_id, topics).await {
                Ok(found) => entry.with_topics(
                    found
                        .into_iter()
                        .map(|(name, ps)| {
                            OffsetFetchResponseTopics::default()
                                .with_name(name)
                                .with_partitions(
                                    ps.into_iter()
                                        .map(|(p, offset, metadata)| {
                                            OffsetFetchResponsePartitions::default()
                                                .with_partition_index(p)
                                                .with_committed_offset(offset)
                                                .with_committed_leader_epoch(-1)
                                                .with_metadata(Some(StrBytes::from_string(
                                                    metadata,
                                                )))
                                        })
                                        .collect(),
                                )
                        })
                        .collect(),
                ),
                Err(code) => entry.with_error_code(code),
            });
        }
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let topics = request.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name, t.partition_indexes))
            .collect()
    });
    match group_offsets(broker, &request.group_id, topics).await {
        Ok(found) => OffsetFetchResponse::default().with_topics(
            found
                .into_iter()
                .map(|(name, ps)| {
                    OffsetFetchResponseTopic::default()
                        .with_name(name)
                        .with_partitions(
                            ps.into_iter()
                                .map(|(p, offset, metadata)| {
                                    OffsetFetchResponsePartition::default()
                                        .with_partition_index(p)
                                        .with_committed_offset(offset)
                                        .with_committed_leader_epoch(-1)
                                        .with_metadata(Some(StrBytes::from_string(metadata)))
                                })
                                .collect(),
                        )
                })
                .collect(),
        ),
        Err(code) => OffsetFetchResponse::default().with_error_code(code),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use streamhouse_metadata::{Error as M, GroupMember};

    #[test]
    fn stale_epochs_are_stale_from_v9() {
        let fenced = M::FencedMemberEpoch {
            group: "g".into(),
            member_id: "m".into(),
            epoch: 1,
            current: 2,
        };
        assert_eq!(commit_code(&fenced, 9), 113);
        assert_eq!(commit_code(&fenced, 8), 110);
        let unknown = M::UnknownMember {
            group: "g".into(),
            member_id: "m".into(),
        };
        assert_eq!(commit_code(&unknown, 9), 25);
    }

    #[test]
    fn fetching_members_are_checked() {
        let members = [GroupMember {
            member_id: "m".into(),
            client_id: "c".into(),
            member_epoch: 4,
            subscription: Vec::new(),
            owned: Vec::new(),
            target: Vec::new(),
            heartbeat_age: Duration::ZERO,
            session_timeout: Duration::from_secs(1),
            assignor: "uniform".into(),
        }];
        assert_eq!(fetch_member_check(&members, "m", 4), Ok(()));
        assert_eq!(fetch_member_check(&members, "m", 3), Err(113));
        assert_eq!(fetch_member_check(&members, "x", 4), Err(25));
    }
}
