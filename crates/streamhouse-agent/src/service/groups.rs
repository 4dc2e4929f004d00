//! The gRPC RPCs of consumer groups, offsets, producer ids and
//! transactions, with the conversions they share.

use streamhouse_metadata::{
    AclOperation as Op, GroupHeartbeat, OffsetCommit, ResourceType as Resource, TopicPartition,
};
use streamhouse_proto as pb;
use streamhouse_proto::ErrorCode;
use tonic::{Request, Response, Status};

use super::Service;
use crate::auth::CLUSTER;
use crate::auth::grpc::{require, session_of};
use crate::error::{describe, error_code, status};

fn end_error_status(e: &crate::transactions::EndError) -> Status {
    match e {
        crate::transactions::EndError::Metadata(m) => status(m),
        crate::transactions::EndError::Storage(s) if s.is_retryable() => {
            pb::with_error_code(Status::unavailable(describe(s)), error_code(s))
        }
        crate::transactions::EndError::Storage(s) => {
            pb::with_error_code(Status::internal(describe(s)), error_code(s))
        }
        crate::transactions::EndError::ProducerIdMapping { .. } => pb::with_error_code(
            Status::failed_precondition(e.to_string()),
            ErrorCode::UnknownProducer,
        ),
    }
}

fn tp(p: &pb::TopicPartitionRef) -> TopicPartition {
    TopicPartition::new(p.topic.clone(), p.partition)
}

fn tp_ref(p: TopicPartition) -> pb::TopicPartitionRef {
    pb::TopicPartitionRef {
        topic: p.topic,
        partition: p.partition,
    }
}

fn committed_info(o: streamhouse_metadata::CommittedOffset) -> pb::CommittedOffsetInfo {
    pb::CommittedOffsetInfo {
        topic: o.topic,
        partition: o.partition,
        offset: o.offset,
        metadata: o.metadata,
        committed_at_ms: o.committed_at_ms,
    }
}

/// The per-response code of a group error, if it is one a member handles
/// (by rejoining); other errors become a gRPC status.
fn group_error(e: &streamhouse_metadata::Error) -> Option<ErrorCode> {
    use streamhouse_metadata::Error as M;
    match e {
        M::UnknownMember { .. } => Some(ErrorCode::UnknownMember),
        // A commit of a partition the member no longer owns: its view is
        // stale, as with a fenced epoch.
        M::FencedMemberEpoch { .. } | M::NotPartitionOwner { .. } => {
            Some(ErrorCode::FencedMemberEpoch)
        }
        M::GroupNotEmpty(_) => Some(ErrorCode::GroupNotEmpty),
        _ => None,
    }
}

/// The transactional id `producer_id` was issued for. A producer id
/// belongs to one transactional id for good, so answers are remembered and
/// the store (every transactional producer) is read only for a producer id
/// not seen before.
async fn transactional_id_of(
    service: &Service,
    producer_id: i64,
) -> Result<Option<String>, Status> {
    if let Some(tid) = service
        .transactional_ids
        .lock()
        .expect("cache lock")
        .get(&producer_id)
    {
        return Ok(Some(tid.clone()));
    }
    let listed = service
        .metadata
        .transactions(None)
        .await
        .map_err(|e| status(&e))?;
    let mut known = service.transactional_ids.lock().expect("cache lock");
    if known.len() + listed.len() > MAX_REMEMBERED_PRODUCERS {
        known.clear();
    }
    known.extend(
        listed
            .into_iter()
            .map(|t| (t.producer_id, t.transactional_id)),
    );
    Ok(known.get(&producer_id).cloned())
}

/// Most producer ids whose transactional id is remembered.
const MAX_REMEMBERED_PRODUCERS: usize = 100_000;

/// The committed offsets of topics `session` may describe.
fn describable_offsets(
    service: &Service,
    session: &crate::auth::Session,
    offsets: Vec<streamhouse_metadata::CommittedOffset>,
) -> Vec<pb::CommittedOffsetInfo> {
    offsets
        .into_iter()
        .filter(|o| {
            service
                .auth
                .allows_silently(session, Op::Describe, Resource::Topic, &o.topic)
        })
        .map(committed_info)
        .collect()
}

/// An error unless `session` may write to the transactional id that
/// holds `producer_id` (Kafka's rule for ending transactions and adding
/// offsets to them). Only read when ACLs are enforced.
pub(super) async fn require_transaction_writer(
    service: &Service,
    session: &crate::auth::Session,
    producer_id: i64,
) -> Result<(), Status> {
    if !service.auth.required() {
        return Ok(());
    }
    let tid = match transactional_id_of(service, producer_id).await? {
        Some(tid) => tid,
        None => {
            return Err(pb::with_error_code(
                Status::failed_precondition(format!(
                    "producer id {producer_id} has no transactional id"
                )),
                ErrorCode::UnknownProducer,
            ));
        }
    };
    require(
        &service.auth,
        session,
        Op::Write,
        Resource::TransactionalId,
        &tid,
    )
}

pub(super) async fn init_producer_id(
    service: &Service,
    request: Request<pb::InitProducerIdRequest>,
) -> Result<Response<pb::InitProducerIdResponse>, Status> {
    let session = session_of(&request);
    let r = request.into_inner();
    match &r.transactional_id {
        Some(tid) => require(
            &service.auth,
            &session,
            Op::Write,
            Resource::TransactionalId,
            tid,
        )?,
        None => {
            if !service.auth.allows_silently(
                &session,
                Op::IdempotentWrite,
                Resource::Cluster,
                CLUSTER,
            ) && !service
                .auth
                .allows_somewhere(&session, Op::Write, Resource::Topic)
            {
                require(
                    &service.auth,
                    &session,
                    Op::IdempotentWrite,
                    Resource::Cluster,
                    CLUSTER,
                )?;
            }
        }
    }
    if let Some(tid) = &r.transactional_id {
        let timeout = if r.transaction_timeout_ms > 0 {
            i64::from(r.transaction_timeout_ms)
        } else {
            60_000
        };
        let id = crate::transactions::init_transactional(
            &service.metadata,
            &service.store,
            tid,
            timeout,
            None,
        )
        .await
        .map_err(|e| end_error_status(&e))?;
        return Ok(Response::new(pb::InitProducerIdResponse {
            producer_id: id.producer_id,
            producer_epoch: id.epoch.into(),
        }));
    }
    let current = match (r.producer_id, r.producer_epoch) {
        (Some(producer_id), Some(epoch)) => {
            let epoch = i16::try_from(epoch).map_err(|_| {
                Status::invalid_argument(format!("producer epoch {epoch} is out of range"))
            })?;
            Some(streamhouse_metadata::ProducerIdentity { producer_id, epoch })
        }
        (None, None) => None,
        _ => {
            return Err(Status::invalid_argument(
                "producer_id and producer_epoch go together",
            ));
        }
    };
    let id = service
        .metadata
        .init_producer_id(current)
        .await
        .map_err(|e| status(&e))?;
    Ok(Response::new(pb::InitProducerIdResponse {
        producer_id: id.producer_id,
        producer_epoch: id.epoch.into(),
    }))
}

pub(super) async fn group_heartbeat(
    service: &Service,
    request: Request<pb::GroupHeartbeatRequest>,
) -> Result<Response<pb::GroupHeartbeatResponse>, Status> {
    let session = session_of(&request);
    let r = request.into_inner();
    require(
        &service.auth,
        &session,
        Op::Read,
        Resource::Group,
        &r.group_id,
    )?;
    for topic in &r.subscribed_topics {
        require(
            &service.auth,
            &session,
            Op::Describe,
            Resource::Topic,
            topic,
        )?;
    }
    let result = service
        .metadata
        .group_heartbeat(GroupHeartbeat {
            group_id: r.group_id,
            member_id: r.member_id,
            member_epoch: r.member_epoch,
            client_id: r.client_id,
            subscription: r.subscribed_topics,
            owned: r.owned.iter().map(tp).collect(),
            session_timeout_ms: r.session_timeout_ms.into(),
            assignor: r.assignor,
        })
        .await;
    let interval = service.group_heartbeat_interval.as_millis() as u32;
    match result {
        Ok(a) => Ok(Response::new(pb::GroupHeartbeatResponse {
            member_id: a.member_id,
            member_epoch: a.member_epoch,
            group_epoch: a.group_epoch,
            assigned: a.assigned.into_iter().map(tp_ref).collect(),
            pending: a.pending.into_iter().map(tp_ref).collect(),
            heartbeat_interval_ms: interval,
            ..Default::default()
        })),
        Err(e) => match group_error(&e) {
            Some(code) => Ok(Response::new(pb::GroupHeartbeatResponse {
                error: code as i32,
                message: describe(&e),
                heartbeat_interval_ms: interval,
                ..Default::default()
            })),
            None => Err(status(&e)),
        },
    }
}

pub(super) async fn commit_offsets(
    service: &Service,
    request: Request<pb::CommitOffsetsRequest>,
) -> Result<Response<pb::CommitOffsetsResponse>, Status> {
    let session = session_of(&request);
    let r = request.into_inner();
    require(
        &service.auth,
        &session,
        Op::Read,
        Resource::Group,
        &r.group_id,
    )?;
    for o in &r.offsets {
        require(&service.auth, &session, Op::Read, Resource::Topic, &o.topic)?;
    }
    let offsets: Vec<OffsetCommit> = r
        .offsets
        .into_iter()
        .map(|o| OffsetCommit {
            topic: o.topic,
            partition: o.partition,
            offset: o.offset,
            metadata: o.metadata,
        })
        .collect();
    let member = r.member_id.as_deref().map(|id| (id, r.member_epoch));
    match service
        .metadata
        .commit_group_offsets(&r.group_id, member, &offsets)
        .await
    {
        Ok(()) => Ok(Response::new(pb::CommitOffsetsResponse::default())),
        Err(e) => match group_error(&e) {
            Some(code) => Ok(Response::new(pb::CommitOffsetsResponse {
                error: code as i32,
                message: describe(&e),
            })),
            None => Err(status(&e)),
        },
    }
}

pub(super) async fn fetch_offsets(
    service: &Service,
    request: Request<pb::FetchOffsetsRequest>,
) -> Result<Response<pb::FetchOffsetsResponse>, Status> {
    let session = session_of(&request);
    let group = request.into_inner().group_id;
    require(
        &service.auth,
        &session,
        Op::Describe,
        Resource::Group,
        &group,
    )?;
    let offsets = service
        .metadata
        .fetch_offsets(&group)
        .await
        .map_err(|e| status(&e))?;
    Ok(Response::new(pb::FetchOffsetsResponse {
        offsets: describable_offsets(service, &session, offsets),
    }))
}

pub(super) async fn list_groups(
    service: &Service,
    request: Request<pb::ListGroupsRequest>,
) -> Result<Response<pb::ListGroupsResponse>, Status> {
    let session = session_of(&request);
    // DESCRIBE on the cluster lists every group, as Kafka's ListGroups.
    let all = service
        .auth
        .allows_silently(&session, Op::Describe, Resource::Cluster, CLUSTER);
    let groups = service
        .metadata
        .list_groups()
        .await
        .map_err(|e| status(&e))?;
    Ok(Response::new(pb::ListGroupsResponse {
        groups: groups
            .into_iter()
            .filter(|(group, _)| {
                all || service
                    .auth
                    .allows_silently(&session, Op::Describe, Resource::Group, group)
            })
            .map(|(group_id, members)| pb::GroupListing {
                group_id,
                members: members as u32,
            })
            .collect(),
    }))
}

pub(super) async fn describe_group(
    service: &Service,
    request: Request<pb::DescribeGroupRequest>,
) -> Result<Response<pb::DescribeGroupResponse>, Status> {
    let session = session_of(&request);
    let group = request.into_inner().group_id;
    require(
        &service.auth,
        &session,
        Op::Describe,
        Resource::Group,
        &group,
    )?;
    let d = service
        .metadata
        .describe_group(&group)
        .await
        .map_err(|e| status(&e))?;
    Ok(Response::new(pb::DescribeGroupResponse {
        group_id: d.group_id,
        group_epoch: d.group_epoch,
        members: d
            .members
            .into_iter()
            .map(|m| pb::MemberInfo {
                member_id: m.member_id,
                client_id: m.client_id,
                member_epoch: m.member_epoch,
                subscribed_topics: m.subscription,
                owned: m.owned.into_iter().map(tp_ref).collect(),
                target: m.target.into_iter().map(tp_ref).collect(),
                heartbeat_age_ms: m.heartbeat_age.as_millis() as u64,
            })
            .collect(),
        offsets: describable_offsets(service, &session, d.offsets),
    }))
}

pub(super) async fn delete_group(
    service: &Service,
    request: Request<pb::DeleteGroupRequest>,
) -> Result<Response<pb::DeleteGroupResponse>, Status> {
    let session = session_of(&request);
    let group = request.into_inner().group_id;
    require(&service.auth, &session, Op::Delete, Resource::Group, &group)?;
    service
        .metadata
        .delete_group(&group)
        .await
        .map_err(|e| status(&e))?;
    Ok(Response::new(pb::DeleteGroupResponse {}))
}

pub(super) async fn add_offsets_to_txn(
    service: &Service,
    request: Request<pb::AddOffsetsToTxnRequest>,
) -> Result<Response<pb::AddOffsetsToTxnResponse>, Status> {
    let session = session_of(&request);
    let r = request.into_inner();
    require_transaction_writer(service, &session, r.producer_id).await?;
    require(
        &service.auth,
        &session,
        Op::Read,
        Resource::Group,
        &r.group_id,
    )?;
    for o in &r.offsets {
        require(&service.auth, &session, Op::Read, Resource::Topic, &o.topic)?;
    }
    let epoch = i16::try_from(r.producer_epoch)
        .map_err(|_| Status::invalid_argument("producer epoch out of range"))?;
    let offsets: Vec<OffsetCommit> = r
        .offsets
        .into_iter()
        .map(|o| OffsetCommit {
            topic: o.topic,
            partition: o.partition,
            offset: o.offset,
            metadata: o.metadata,
        })
        .collect();
    service
        .metadata
        .add_transaction_offsets(
            streamhouse_metadata::ProducerIdentity {
                producer_id: r.producer_id,
                epoch,
            },
            &r.group_id,
            r.member_id.as_deref().map(|m| (m, r.member_epoch)),
            &offsets,
        )
        .await
        .map_err(|e| status(&e))?;
    Ok(Response::new(pb::AddOffsetsToTxnResponse {}))
}

pub(super) async fn end_txn(
    service: &Service,
    request: Request<pb::EndTxnRequest>,
) -> Result<Response<pb::EndTxnResponse>, Status> {
    service.check_running()?;
    let session = session_of(&request);
    let r = request.into_inner();
    require_transaction_writer(service, &session, r.producer_id).await?;
    let epoch = i16::try_from(r.producer_epoch)
        .map_err(|_| Status::invalid_argument("producer epoch out of range"))?;
    let next = crate::transactions::end_transaction(
        &service.metadata,
        &service.store,
        r.producer_id,
        Some(epoch),
        r.commit,
        crate::transactions::Ending::BumpEpoch,
    )
    .await
    .map_err(|e| end_error_status(&e))?;
    Ok(Response::new(pb::EndTxnResponse {
        producer_id: next.producer_id,
        producer_epoch: next.epoch.into(),
    }))
}
