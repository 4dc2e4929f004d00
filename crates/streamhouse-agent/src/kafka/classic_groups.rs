//! The Kafka classic group protocol: JoinGroup, SyncGroup, Heartbeat and
//! LeaveGroup over the metadata store's classic groups, so any agent
//! coordinates any group. JoinGroup and SyncGroup wait by polling the
//! store (after [`POLL_MIN`] at first, backing off to [`POLL_MAX`]) until
//! the join phase ends or the leader's assignments are in, bounded by the
//! member's rebalance timeout, and stop once the client closed its
//! connection; the connection keeps reading and handling its other
//! requests meanwhile, and answers still go out in request order.

use std::ops::RangeInclusive;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, SyncGroupRequest, SyncGroupResponse,
};
use kafka_protocol::protocol::StrBytes;
use streamhouse_metadata::{ClassicJoin, ClassicSync, JoinProgress, SyncProgress};
use tokio::time::Instant;

use super::Broker;
use super::authz::GROUP_DENIED;
use super::connection::Peer;
use super::errors::group_code;
use crate::auth::Session;
use crate::error::bounded;

pub(super) const JOIN_VERSIONS: RangeInclusive<i16> = 0..=9;
pub(super) const SYNC_VERSIONS: RangeInclusive<i16> = 0..=5;
pub(super) const HEARTBEAT_VERSIONS: RangeInclusive<i16> = 0..=4;
pub(super) const LEAVE_VERSIONS: RangeInclusive<i16> = 0..=5;

/// How soon a waiting JoinGroup or SyncGroup asks the store again at
/// first; each further wait is longer by half, up to [`POLL_MAX`].
const POLL_MIN: Duration = Duration::from_millis(20);
/// The longest wait between two asks of a waiting JoinGroup or SyncGroup.
const POLL_MAX: Duration = Duration::from_millis(250);
/// Waiting longer than the rebalance timeout by this much gives up (the
/// store ends a join phase at the longest rebalance timeout).
const WAIT_SLACK: Duration = Duration::from_secs(5);
/// How long a SyncGroup waits for the leader's at most (a member that
/// stops sending requests is expired by its session before that, which
/// ends the wait with REBALANCE_IN_PROGRESS).
const SYNC_WAIT_MAX: Duration = Duration::from_secs(300);
/// Characters of the client id a generated member id starts with.
const MAX_CLIENT_ID_IN_MEMBER_ID: usize = 64;
/// Session timeouts accepted (Kafka's `group.max.session.timeout.ms`).
const MAX_SESSION_MS: i32 = 1_800_000;

/// The shortest session timeout a member may ask for (Kafka's
/// `group.min.session.timeout.ms` default): a shorter one would expire
/// between a member's own requests.
const MIN_SESSION_MS: i32 = 6_000;

fn s(value: impl Into<String>) -> StrBytes {
    StrBytes::from_string(value.into())
}

/// A member id for a member that sent none.
fn new_member_id(client_id: &str) -> String {
    let client = if client_id.is_empty() {
        "consumer"
    } else {
        client_id
    };
    let client: String = client.chars().take(MAX_CLIENT_ID_IN_MEMBER_ID).collect();
    format!("{client}-{}", ulid::Ulid::new().to_string().to_lowercase())
}

/// How a wait ended: with the store's answer, or with the Kafka error
/// code to send (retriable store errors are retried until the deadline).
enum Waited<T> {
    Done(T),
    Failed(i16),
}

/// Polls `step` until it is done, fails, the deadline passes, the client
/// is gone or the agent shuts down. `step` is told whether the store has
/// not yet answered this request (`true` until a first "not yet").
async fn poll<T, F, Fut>(broker: &Broker, peer: &Peer, deadline: Instant, mut step: F) -> Waited<T>
where
    F: FnMut(bool) -> Fut,
    Fut: Future<Output = streamhouse_metadata::Result<Option<T>>>,
{
    let mut first = true;
    let mut pause = POLL_MIN;
    loop {
        match step(first).await {
            Ok(Some(done)) => return Waited::Done(done),
            // Asked again: the store has seen this request.
            Ok(None) => first = false,
            Err(e) if e.is_retryable() => {
                tracing::debug!(error = %e, "classic group step failed; retrying");
            }
            Err(e) => return Waited::Failed(group_code(&e)),
        }
        if broker
            .shutting_down
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return Waited::Failed(ResponseError::CoordinatorNotAvailable.code());
        }
        // Nobody reads the answer: stop refreshing the member's session.
        if peer.is_gone() {
            return Waited::Failed(ResponseError::UnknownServerError.code());
        }
        if Instant::now() >= deadline {
            return Waited::Failed(ResponseError::RebalanceInProgress.code());
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 3 / 2).min(POLL_MAX);
    }
}

fn join_error(version: i16, code: i16, member_id: String) -> JoinGroupResponse {
    JoinGroupResponse::default()
        .with_error_code(code)
        .with_generation_id(-1)
        .with_protocol_name((version < 7).then(|| s("")))
        .with_member_id(s(member_id))
}

/// Whether `session` may read `group` (JoinGroup, SyncGroup, Heartbeat,
/// LeaveGroup).
fn may_read(broker: &Broker, session: &Session, group: &str) -> bool {
    super::authz_groups::group(
        broker,
        session,
        streamhouse_metadata::AclOperation::Read,
        group,
    )
}

pub(super) async fn join(
    broker: &Broker,
    r: JoinGroupRequest,
    version: i16,
    client_id: String,
    peer: Peer,
) -> JoinGroupResponse {
    let group = r.group_id.0.to_string();
    if group.is_empty() {
        return join_error(version, ResponseError::InvalidGroupId.code(), String::new());
    }
    if !may_read(broker, &peer.session, &group) {
        return join_error(version, GROUP_DENIED, String::new());
    }
    let instance = r.group_instance_id.as_ref().map(|i| i.to_string());
    let mut member_id = r.member_id.to_string();
    let new_member = member_id.is_empty();
    if new_member {
        member_id = new_member_id(&client_id);
        // A dynamic member of v4+ learns its id first and joins with it.
        if version >= 4 && instance.is_none() {
            return join_error(version, ResponseError::MemberIdRequired.code(), member_id);
        }
    }
    if !(MIN_SESSION_MS..=MAX_SESSION_MS).contains(&r.session_timeout_ms) {
        return join_error(
            version,
            ResponseError::InvalidSessionTimeout.code(),
            member_id,
        );
    }
    // Capped as the session timeout is (Kafka Streams asks for i32::MAX).
    let rebalance_timeout_ms = if version >= 1 && r.rebalance_timeout_ms > 0 {
        r.rebalance_timeout_ms.min(MAX_SESSION_MS)
    } else {
        r.session_timeout_ms
    };
    let mut request = ClassicJoin {
        group_id: group.clone(),
        member_id: member_id.clone(),
        new_member,
        repeat: false,
        group_instance_id: instance,
        client_id,
        client_host: peer.host.clone(),
        session_timeout_ms: r.session_timeout_ms,
        rebalance_timeout_ms,
        initial_rebalance_delay_ms: i32::try_from(broker.group_initial_rebalance_delay.as_millis())
            .unwrap_or(i32::MAX),
        protocol_type: r.protocol_type.to_string(),
        protocols: r
            .protocols
            .iter()
            .map(|p| (p.name.to_string(), p.metadata.to_vec()))
            .collect(),
    };
    let deadline = Instant::now() + Duration::from_millis(rebalance_timeout_ms as u64) + WAIT_SLACK;
    let metadata = &broker.metadata;
    let waited = poll(broker, &peer, deadline, |first| {
        if !first {
            request.new_member = false;
            request.repeat = true;
        }
        let request = request.clone();
        async move {
            Ok(match metadata.classic_join(request).await? {
                JoinProgress::Waiting => None,
                joined => Some(joined),
            })
        }
    })
    .await;
    match waited {
        Waited::Done(JoinProgress::Joined {
            generation,
            protocol_type,
            protocol_name,
            leader,
            member_id,
            members,
        }) => {
            tracing::debug!(
                group = %bounded(&group),
                member = %bounded(&member_id),
                generation,
                leader = %bounded(&leader),
                members = members.len(),
                "JoinGroup answered"
            );
            JoinGroupResponse::default()
                .with_generation_id(generation)
                .with_protocol_type((version >= 7).then(|| s(protocol_type)))
                .with_protocol_name(Some(s(protocol_name)))
                .with_leader(s(leader))
                .with_member_id(s(member_id))
                .with_members(
                    members
                        .into_iter()
                        .map(|m| {
                            JoinGroupResponseMember::default()
                                .with_member_id(s(m.member_id))
                                .with_group_instance_id(if version >= 5 {
                                    m.group_instance_id.map(s)
                                } else {
                                    None
                                })
                                .with_metadata(Bytes::from(m.metadata))
                        })
                        .collect(),
                )
        }
        Waited::Done(JoinProgress::Waiting) => join_error(
            version,
            ResponseError::RebalanceInProgress.code(),
            member_id,
        ),
        Waited::Failed(code) => {
            tracing::debug!(group = %bounded(&group), member = %bounded(&member_id), code, "JoinGroup failed");
            join_error(version, code, member_id)
        }
    }
}

pub(super) async fn sync(
    broker: &Broker,
    r: SyncGroupRequest,
    version: i16,
    peer: &Peer,
) -> SyncGroupResponse {
    let group = r.group_id.0.to_string();
    if group.is_empty() {
        return SyncGroupResponse::default().with_error_code(ResponseError::InvalidGroupId.code());
    }
    if !may_read(broker, &peer.session, &group) {
        return SyncGroupResponse::default().with_error_code(GROUP_DENIED);
    }
    let r_member = r.member_id.to_string();
    let request = ClassicSync {
        group_id: group.clone(),
        member_id: r_member.clone(),
        group_instance_id: r.group_instance_id.as_ref().map(|i| i.to_string()),
        generation: r.generation_id,
        protocol_type: r.protocol_type.as_ref().map(|p| p.to_string()),
        protocol_name: r.protocol_name.as_ref().map(|p| p.to_string()),
        assignments: r
            .assignments
            .iter()
            .map(|a| (a.member_id.to_string(), a.assignment.to_vec()))
            .collect(),
    };
    // The sync waits for the leader's, at most a join phase long.
    let deadline = Instant::now() + SYNC_WAIT_MAX;
    let metadata = &broker.metadata;
    let waited = poll(broker, peer, deadline, |_| {
        let request = request.clone();
        async move {
            Ok(match metadata.classic_sync(request).await? {
                SyncProgress::Waiting => None,
                assigned => Some(assigned),
            })
        }
    })
    .await;
    match waited {
        Waited::Done(SyncProgress::Assigned {
            protocol_type,
            protocol_name,
            assignment,
        }) => {
            tracing::debug!(
                group = %bounded(&group),
                member = %bounded(&r_member),
                bytes = assignment.len(),
                "SyncGroup answered"
            );
            let response = SyncGroupResponse::default().with_assignment(Bytes::from(assignment));
            if version >= 5 {
                response
                    .with_protocol_type(Some(s(protocol_type)))
                    .with_protocol_name(Some(s(protocol_name)))
            } else {
                response
            }
        }
        Waited::Done(SyncProgress::Waiting) => {
            SyncGroupResponse::default().with_error_code(ResponseError::RebalanceInProgress.code())
        }
        Waited::Failed(code) => {
            tracing::debug!(group = %bounded(&group), member = %bounded(&r_member), code, "SyncGroup failed");
            SyncGroupResponse::default().with_error_code(code)
        }
    }
}

pub(super) async fn heartbeat(
    broker: &Broker,
    r: HeartbeatRequest,
    session: &Session,
) -> HeartbeatResponse {
    let group = r.group_id.0.to_string();
    if group.is_empty() {
        return HeartbeatResponse::default().with_error_code(ResponseError::InvalidGroupId.code());
    }
    if !may_read(broker, session, &group) {
        return HeartbeatResponse::default().with_error_code(GROUP_DENIED);
    }
    let instance = r.group_instance_id.as_ref().map(|i| i.to_string());
    let code = match broker
        .metadata
        .classic_heartbeat(&group, &r.member_id, instance.as_deref(), r.generation_id)
        .await
    {
        Ok(()) => 0,
        Err(e) => {
            tracing::debug!(group = %bounded(&group), error = %e, "Heartbeat refused");
            group_code(&e)
        }
    };
    HeartbeatResponse::default().with_error_code(code)
}

pub(super) async fn leave(
    broker: &Broker,
    r: LeaveGroupRequest,
    version: i16,
    session: &Session,
) -> LeaveGroupResponse {
    let group = r.group_id.0.to_string();
    if group.is_empty() {
        return LeaveGroupResponse::default().with_error_code(ResponseError::InvalidGroupId.code());
    }
    if !may_read(broker, session, &group) {
        return LeaveGroupResponse::default().with_error_code(GROUP_DENIED);
    }
    let members: Vec<(String, Option<String>)> = if version >= 3 {
        r.members
            .iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    m.group_instance_id.as_ref().map(|i| i.to_string()),
                )
            })
            .collect()
    } else {
        vec![(r.member_id.to_string(), None)]
    };
    match broker.metadata.classic_leave(&group, &members).await {
        Ok(answers) if version >= 3 => LeaveGroupResponse::default().with_members(
            members
                .into_iter()
                .zip(answers)
                .map(|((member_id, instance), answer)| {
                    MemberResponse::default()
                        .with_member_id(s(member_id))
                        .with_group_instance_id(instance.map(s))
                        .with_error_code(answer.err().map(|e| group_code(&e)).unwrap_or(0))
                })
                .collect(),
        ),
        Ok(answers) => LeaveGroupResponse::default().with_error_code(
            answers
                .into_iter()
                .find_map(|a| a.err().map(|e| group_code(&e)))
                .unwrap_or(0),
        ),
        Err(e) => LeaveGroupResponse::default().with_error_code(group_code(&e)),
    }
}
