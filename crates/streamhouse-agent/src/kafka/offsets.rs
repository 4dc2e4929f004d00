//! OffsetCommit and OffsetFetch by group id: the committed offsets gRPC
//! clients use too. A commit without a member (generation -1 or an empty
//! member id) is a standalone commit, allowed while the group has no live
//! members; a commit with a member id is checked against the group's
//! members and their epochs, as for gRPC members, or, in a classic
//! (JoinGroup) group, against its members and generation.

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

/// The Kafka code of a failed commit.
fn commit_code(e: &streamhouse_metadata::Error) -> i16 {
    use streamhouse_metadata::Error as M;
    match e {
        M::UnknownMember { .. }
        | M::IllegalGeneration { .. }
        | M::RebalanceInProgress(_)
        | M::FencedInstanceId { .. } => group_code(e),
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

pub(super) async fn commit(broker: &Broker, request: OffsetCommitRequest) -> OffsetCommitResponse {
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
                commit_code(&e)
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
        .map_err(|e| commit_code(&e))?;
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
