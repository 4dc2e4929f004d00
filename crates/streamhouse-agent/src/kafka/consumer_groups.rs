//! ConsumerGroupHeartbeat (KIP-848): Kafka clients with
//! `group.protocol=consumer` join, heartbeat in and leave the groups of the
//! server-side coordinator native clients use over gRPC
//! ([`GroupStore::group_heartbeat`](streamhouse_metadata::GroupStore::group_heartbeat)),
//! so both kinds of members can share one group's partitions.
//!
//! What the request maps to:
//! - member id: v0 joins with an empty id and gets one from the store; v1
//!   clients choose theirs (a UUID string) and an empty one is refused.
//! - member epoch: 0 joins, -1 leaves, -2 (a static member's temporary
//!   leave) leaves too: static membership is not served (a heartbeat
//!   naming an instance id is refused), so a member that comes back joins
//!   as a new one.
//! - null subscribed topic names and null owned partitions mean "unchanged
//!   since the last heartbeat": the store takes the full subscription and
//!   owned set each time, so they are read back from the member as the
//!   store describes it. Owned partitions recorded there include what the
//!   member was last given, so a null owned set never frees a partition
//!   early.
//! - a subscribed topic regex (v1) is refused with INVALID_REQUEST (an
//!   empty one is none).
//! - joining takes a subscription; owned partitions, if sent, must be
//!   empty (librdkafka sends null).
//! - the server assignor: `uniform` (sticky, balanced) or `range`
//!   (contiguous ranges of each topic), or none (null or empty: what the
//!   member asked for before, `uniform` on joining); the group uses the
//!   one most of its members ask for. Any other name is
//!   UNSUPPORTED_ASSIGNOR.
//! - the session timeout is the agent's (`kafka_group_session_timeout`),
//!   as Kafka's `group.consumer.session.timeout.ms`; the rebalance timeout
//!   and rack id carry nothing the store uses: a partition moves only once
//!   its owner released it or its session expired.
//!
//! The answer carries the member's assignment, by topic id
//! ([`topic_ids`]), on every heartbeat that is not a leave: librdkafka
//! compares it with what it holds and reconciles only a change.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::RangeInclusive;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::consumer_group_heartbeat_response::{
    Assignment, TopicPartitions as AssignedTopic,
};
use kafka_protocol::messages::{ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse};
use kafka_protocol::protocol::StrBytes;
use streamhouse_metadata::assignment::ASSIGNORS;
use streamhouse_metadata::{
    GroupHeartbeat, GroupMember, JOIN_GROUP_EPOCH, LEAVE_GROUP_EPOCH, Topic, TopicPartition,
};
use uuid::Uuid;

use super::Broker;
use super::topic_ids::{self, topic_uuid};
use crate::error::bounded;

/// ConsumerGroupHeartbeat versions served.
pub(super) const VERSIONS: RangeInclusive<i16> = 0..=1;

/// A static member's temporary leave.
const LEAVE_STATIC_EPOCH: i32 = -2;

/// A refused heartbeat: its Kafka code and why.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Refusal {
    pub code: i16,
    pub message: String,
}

fn invalid(message: impl Into<String>) -> Refusal {
    Refusal {
        code: ResponseError::InvalidRequest.code(),
        message: message.into(),
    }
}

/// What the heartbeat asks for, once checked.
#[derive(Debug, PartialEq, Eq)]
enum Intent {
    Join,
    Leave,
    Heartbeat,
}

/// Checks the request as Kafka does, and what it asks for.
fn check(r: &ConsumerGroupHeartbeatRequest, version: i16) -> Result<Intent, Refusal> {
    if r.group_id.is_empty() {
        return Err(invalid("the group id is empty"));
    }
    if version >= 1 && r.member_id.is_empty() {
        return Err(invalid("the member id is empty (v1 clients choose it)"));
    }
    if r.subscribed_topic_regex
        .as_ref()
        .is_some_and(|x| !x.is_empty())
    {
        return Err(invalid(
            "subscribing by topic regex is not served: name the topics",
        ));
    }
    if let Some(assignor) = &r.server_assignor
        && !assignor.is_empty()
        && !ASSIGNORS.contains(&assignor.as_str())
    {
        return Err(Refusal {
            code: ResponseError::UnsupportedAssignor.code(),
            message: format!(
                "server assignor {:?} is not served; the assignors are {}",
                bounded(assignor),
                ASSIGNORS.join(", ")
            ),
        });
    }
    match r.member_epoch {
        LEAVE_GROUP_EPOCH | LEAVE_STATIC_EPOCH => {
            if r.member_id.is_empty() {
                return Err(invalid("leaving takes the member id"));
            }
            return Ok(Intent::Leave);
        }
        _ => {}
    }
    if r.instance_id.is_some() {
        return Err(invalid(
            "static membership (group.instance.id) is not served by this coordinator",
        ));
    }
    match r.member_epoch {
        JOIN_GROUP_EPOCH => {
            if r.topic_partitions.as_ref().is_some_and(|t| !t.is_empty()) {
                return Err(invalid("the owned partitions must be empty when joining"));
            }
            if r.subscribed_topic_names.as_ref().is_none_or(Vec::is_empty) {
                return Err(invalid("the subscribed topics must be set when joining"));
            }
            Ok(Intent::Join)
        }
        e if e > 0 => {
            if r.member_id.is_empty() {
                return Err(invalid("the member id is empty"));
            }
            Ok(Intent::Heartbeat)
        }
        e => Err(invalid(format!("member epoch {e} is invalid"))),
    }
}

/// The owned partitions the request reports, by topic name. Ids of topics
/// that no longer exist are dropped (the member cannot own them).
fn owned_partitions(
    r: &ConsumerGroupHeartbeatRequest,
    topics: &HashMap<Uuid, Topic>,
) -> Result<Option<Vec<TopicPartition>>, Refusal> {
    let Some(owned) = &r.topic_partitions else {
        return Ok(None);
    };
    let mut out = Vec::new();
    for t in owned {
        let Some(topic) = topics.get(&t.topic_id) else {
            continue;
        };
        for &p in &t.partitions {
            let p = u32::try_from(p)
                .map_err(|_| invalid(format!("owned partition {p} is negative")))?;
            out.push(TopicPartition::new(topic.name.clone(), p));
        }
    }
    Ok(Some(out))
}

/// The store's heartbeat for the request: null fields are taken from the
/// member as last stored (`previous`).
fn store_heartbeat(
    r: &ConsumerGroupHeartbeatRequest,
    intent: &Intent,
    owned: Option<Vec<TopicPartition>>,
    previous: Option<&GroupMember>,
    client_id: &str,
    session_timeout_ms: i64,
) -> GroupHeartbeat {
    let subscription = match (&r.subscribed_topic_names, previous) {
        (Some(names), _) => names.iter().map(|n| n.0.to_string()).collect(),
        (None, Some(m)) => m.subscription.clone(),
        (None, None) => Vec::new(),
    };
    let owned = match (owned, previous) {
        (Some(o), _) => o,
        (None, Some(m)) => m.owned.clone(),
        (None, None) => Vec::new(),
    };
    GroupHeartbeat {
        group_id: r.group_id.0.to_string(),
        member_id: r.member_id.to_string(),
        member_epoch: match intent {
            Intent::Join => JOIN_GROUP_EPOCH,
            Intent::Leave => LEAVE_GROUP_EPOCH,
            Intent::Heartbeat => r.member_epoch,
        },
        client_id: client_id.to_string(),
        subscription,
        owned,
        session_timeout_ms,
        assignor: r
            .server_assignor
            .as_deref()
            .filter(|a| !a.is_empty())
            .map(str::to_string),
    }
}

/// `partitions` by topic id, topics and partitions in order; partitions of
/// topics no longer known are left out.
pub(super) fn by_topic_id(
    partitions: &[TopicPartition],
    topics: &HashMap<String, Uuid>,
) -> Vec<(Uuid, String, Vec<i32>)> {
    let mut grouped: BTreeMap<&str, BTreeSet<i32>> = BTreeMap::new();
    for tp in partitions {
        grouped
            .entry(tp.topic.as_str())
            .or_default()
            .insert(tp.partition as i32);
    }
    grouped
        .into_iter()
        .filter_map(|(name, ps)| {
            topics
                .get(name)
                .map(|id| (*id, name.to_string(), ps.into_iter().collect()))
        })
        .collect()
}

/// The Kafka code of a failed store heartbeat.
fn heartbeat_code(e: &streamhouse_metadata::Error) -> i16 {
    use streamhouse_metadata::Error as M;
    match e {
        M::UnknownMember { .. } => ResponseError::UnknownMemberId.code(),
        M::FencedMemberEpoch { .. } => ResponseError::FencedMemberEpoch.code(),
        M::InvalidArgument { .. } | M::Invalid(_) => ResponseError::InvalidRequest.code(),
        // The group id is a classic (JoinGroup) group with live members.
        M::InconsistentGroupProtocol { .. } => ResponseError::InconsistentGroupProtocol.code(),
        // Retriable: the client finds the coordinator again and retries.
        M::Database { .. } | M::CommitOutcomeUnknown { .. } => {
            ResponseError::CoordinatorNotAvailable.code()
        }
        _ => ResponseError::UnknownServerError.code(),
    }
}

pub(super) async fn heartbeat(
    broker: &Broker,
    request: ConsumerGroupHeartbeatRequest,
    version: i16,
    client_id: String,
    session: &crate::auth::Session,
) -> ConsumerGroupHeartbeatResponse {
    let interval = i32::try_from(broker.group_heartbeat_interval.as_millis()).unwrap_or(i32::MAX);
    if !super::authz_groups::group(
        broker,
        session,
        streamhouse_metadata::AclOperation::Read,
        &request.group_id,
    ) {
        return ConsumerGroupHeartbeatResponse::default()
            .with_error_code(super::authz::GROUP_DENIED)
            .with_heartbeat_interval_ms(interval);
    }
    // Subscribing to a topic the principal may not describe is refused, as
    // Kafka does: an assignment would tell its partitions.
    let hidden = request.subscribed_topic_names.iter().flatten().find(|t| {
        !broker.auth.allows(
            session,
            streamhouse_metadata::AclOperation::Describe,
            streamhouse_metadata::ResourceType::Topic,
            t,
        )
    });
    if let Some(topic) = hidden {
        return ConsumerGroupHeartbeatResponse::default()
            .with_error_code(super::authz::TOPIC_DENIED)
            .with_error_message(Some(StrBytes::from_string(format!(
                "{} may not describe topic {:?}",
                session.principal,
                bounded(topic)
            ))))
            .with_heartbeat_interval_ms(interval);
    }
    let answer = match answer(broker, &request, version, &client_id).await {
        Ok(a) => a,
        Err(refusal) => {
            tracing::info!(
                group = %bounded(&request.group_id),
                member = %bounded(&request.member_id),
                code = refusal.code,
                reason = %refusal.message,
                "Kafka consumer group heartbeat refused"
            );
            ConsumerGroupHeartbeatResponse::default()
                .with_error_code(refusal.code)
                .with_error_message(Some(StrBytes::from_string(refusal.message)))
        }
    };
    answer.with_heartbeat_interval_ms(interval)
}

async fn answer(
    broker: &Broker,
    r: &ConsumerGroupHeartbeatRequest,
    version: i16,
    client_id: &str,
) -> Result<ConsumerGroupHeartbeatResponse, Refusal> {
    let intent = check(r, version)?;
    let store_error = |e: streamhouse_metadata::Error| Refusal {
        code: heartbeat_code(&e),
        message: e.to_string(),
    };
    let topics = if intent == Intent::Leave {
        HashMap::new()
    } else {
        topic_ids::by_uuid(broker).await.map_err(store_error)?
    };
    let owned = owned_partitions(r, &topics)?;
    let previous =
        if intent == Intent::Heartbeat && (r.subscribed_topic_names.is_none() || owned.is_none()) {
            match broker.metadata.describe_group(&r.group_id).await {
                Ok(g) => g
                    .members
                    .into_iter()
                    .find(|m| m.member_id.as_str() == r.member_id.as_str()),
                Err(streamhouse_metadata::Error::GroupNotFound(_)) => None,
                Err(e) => return Err(store_error(e)),
            }
        } else {
            None
        };
    let session_timeout_ms =
        i64::try_from(broker.group_session_timeout.as_millis()).unwrap_or(i64::MAX);
    let hb = store_heartbeat(
        r,
        &intent,
        owned,
        previous.as_ref(),
        client_id,
        session_timeout_ms,
    );
    let given = broker
        .metadata
        .group_heartbeat(hb)
        .await
        .map_err(store_error)?;
    let response = ConsumerGroupHeartbeatResponse::default()
        .with_member_id(Some(StrBytes::from_string(given.member_id)));
    if intent == Intent::Leave {
        return Ok(response.with_member_epoch(r.member_epoch));
    }
    let ids: HashMap<String, Uuid> = topics
        .values()
        .map(|t| (t.name.clone(), topic_uuid(t)))
        .collect();
    let assigned = by_topic_id(&given.assigned, &ids)
        .into_iter()
        .map(|(id, _, partitions)| {
            AssignedTopic::default()
                .with_topic_id(id)
                .with_partitions(partitions)
        })
        .collect();
    Ok(response
        .with_member_epoch(given.member_epoch)
        .with_assignment(Some(Assignment::default().with_topic_partitions(assigned))))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use kafka_protocol::messages::consumer_group_heartbeat_request::TopicPartitions;
    use kafka_protocol::messages::{GroupId, TopicName};

    use super::*;

    fn request(member: &str, epoch: i32) -> ConsumerGroupHeartbeatRequest {
        ConsumerGroupHeartbeatRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str("g")))
            .with_member_id(StrBytes::from_string(member.into()))
            .with_member_epoch(epoch)
            .with_rebalance_timeout_ms(30_000)
            .with_subscribed_topic_names(Some(vec![TopicName(StrBytes::from_static_str("t"))]))
            .with_topic_partitions(Some(Vec::new()))
    }

    fn topic(id: i64, name: &str) -> Topic {
        Topic {
            id,
            name: name.into(),
            partition_count: 3,
            retention_ms: None,
            config: HashMap::new(),
            created_at_ms: 5,
        }
    }

    fn code(r: Result<Intent, Refusal>) -> i16 {
        r.map(|_| 0).unwrap_or_else(|e| e.code)
    }

    #[test]
    fn requests_are_checked_as_kafka_does() {
        const INVALID: i16 = 42;
        assert_eq!(check(&request("", 0), 0), Ok(Intent::Join));
        assert_eq!(code(check(&request("", 0), 1)), INVALID);
        assert_eq!(check(&request("m", 0), 1), Ok(Intent::Join));
        assert_eq!(check(&request("m", 3), 1), Ok(Intent::Heartbeat));
        assert_eq!(check(&request("m", -1), 1), Ok(Intent::Leave));
        assert_eq!(check(&request("m", -2), 1), Ok(Intent::Leave));
        assert_eq!(code(check(&request("m", -3), 1)), INVALID);
        assert_eq!(code(check(&request("", 2), 0)), INVALID);
        // Joining: no owned partitions, and a subscription.
        let owned = request("m", 0).with_topic_partitions(Some(vec![TopicPartitions::default()]));
        assert_eq!(code(check(&owned, 1)), INVALID);
        let null_owned = request("m", 0).with_topic_partitions(None);
        assert_eq!(check(&null_owned, 1), Ok(Intent::Join));
        let empty_regex = request("m", 0).with_subscribed_topic_regex(Some("".into()));
        assert_eq!(check(&empty_regex, 1), Ok(Intent::Join));
        let unsubscribed = request("m", 0).with_subscribed_topic_names(None);
        assert_eq!(code(check(&unsubscribed, 1)), INVALID);
        // Null means unchanged on later heartbeats.
        let unchanged = request("m", 4)
            .with_subscribed_topic_names(None)
            .with_topic_partitions(None);
        assert_eq!(check(&unchanged, 1), Ok(Intent::Heartbeat));
        let regex = request("m", 0).with_subscribed_topic_regex(Some("t.*".into()));
        assert_eq!(code(check(&regex, 1)), INVALID);
        let static_member = request("m", 0).with_instance_id(Some("i".into()));
        assert_eq!(code(check(&static_member, 1)), INVALID);
        let mut no_group = request("m", 0);
        no_group.group_id = GroupId(StrBytes::from_static_str(""));
        assert_eq!(code(check(&no_group, 1)), INVALID);
    }

    #[test]
    fn the_uniform_and_range_assignors_are_served() {
        for name in ["uniform", "range", ""] {
            let r = request("m", 0).with_server_assignor(Some(name.into()));
            assert_eq!(check(&r, 1), Ok(Intent::Join), "{name}");
        }
        let sticky = request("m", 0).with_server_assignor(Some("sticky".into()));
        assert_eq!(code(check(&sticky, 1)), 112);
    }

    #[test]
    fn owned_partitions_are_read_by_topic_id() {
        let t = topic(1, "t");
        let id = topic_uuid(&t);
        let topics = topic_ids::index(vec![t, topic(2, "u")]);
        let r = request("m", 2).with_topic_partitions(Some(vec![
            TopicPartitions::default()
                .with_topic_id(id)
                .with_partitions(vec![2, 0]),
            // A deleted topic: dropped.
            TopicPartitions::default()
                .with_topic_id(Uuid::from_u128(7))
                .with_partitions(vec![1]),
        ]));
        assert_eq!(
            owned_partitions(&r, &topics).unwrap(),
            Some(vec![
                TopicPartition::new("t", 2),
                TopicPartition::new("t", 0)
            ])
        );
        let negative = request("m", 2).with_topic_partitions(Some(vec![
            TopicPartitions::default()
                .with_topic_id(id)
                .with_partitions(vec![-1]),
        ]));
        assert_eq!(owned_partitions(&negative, &topics).unwrap_err().code, 42);
        let unchanged = request("m", 2).with_topic_partitions(None);
        assert_eq!(owned_partitions(&unchanged, &topics).unwrap(), None);
    }

    #[test]
    fn null_fields_keep_what_the_member_last_sent() {
        let previous = GroupMember {
            member_id: "m".into(),
            client_id: "c".into(),
            member_epoch: 4,
            subscription: vec!["a".into(), "b".into()],
            owned: vec![TopicPartition::new("a", 1)],
            target: vec![TopicPartition::new("a", 1)],
            heartbeat_age: Duration::ZERO,
            session_timeout: Duration::from_secs(45),
            assignor: "uniform".into(),
        };
        let r = request("m", 4)
            .with_subscribed_topic_names(None)
            .with_topic_partitions(None);
        let hb = store_heartbeat(&r, &Intent::Heartbeat, None, Some(&previous), "app", 45_000);
        assert_eq!(hb.subscription, ["a", "b"]);
        assert_eq!(hb.owned, [TopicPartition::new("a", 1)]);
        assert_eq!((hb.member_epoch, hb.client_id.as_str()), (4, "app"));
        assert_eq!(hb.assignor, None, "a null assignor keeps the member's");
        let ranged = r.clone().with_server_assignor(Some("range".into()));
        let hb = store_heartbeat(&ranged, &Intent::Heartbeat, None, Some(&previous), "app", 1);
        assert_eq!(hb.assignor.as_deref(), Some("range"));
        let empty = r.clone().with_server_assignor(Some("".into()));
        let hb = store_heartbeat(&empty, &Intent::Heartbeat, None, Some(&previous), "app", 1);
        assert_eq!(hb.assignor, None, "an empty assignor is none");
        // Sent fields win, an empty owned set included.
        let r = request("m", 4);
        let hb = store_heartbeat(
            &r,
            &Intent::Heartbeat,
            Some(Vec::new()),
            Some(&previous),
            "app",
            45_000,
        );
        assert_eq!(hb.subscription, ["t"]);
        assert!(hb.owned.is_empty());
        // A static leave is a leave.
        let hb = store_heartbeat(&request("m", -2), &Intent::Leave, None, None, "app", 1);
        assert_eq!(hb.member_epoch, LEAVE_GROUP_EPOCH);
    }

    #[test]
    fn store_errors_map_to_kafka_codes() {
        use streamhouse_metadata::Error as M;
        let unknown = M::UnknownMember {
            group: "g".into(),
            member_id: "m".into(),
        };
        assert_eq!(heartbeat_code(&unknown), 25);
        let fenced = M::FencedMemberEpoch {
            group: "g".into(),
            member_id: "m".into(),
            epoch: 1,
            current: 2,
        };
        assert_eq!(heartbeat_code(&fenced), 110);
        let invalid = M::InvalidArgument {
            field: "session timeout",
            reason: "0".into(),
        };
        assert_eq!(heartbeat_code(&invalid), 42);
        assert_eq!(heartbeat_code(&M::GroupNotEmpty("g".into())), -1);
        let classic = M::InconsistentGroupProtocol {
            group: "g".into(),
            reason: "it is a classic group".into(),
        };
        assert_eq!(heartbeat_code(&classic), 23);
    }

    #[test]
    fn assignments_are_grouped_by_topic_id() {
        let ids = HashMap::from([
            ("a".to_string(), Uuid::from_u128(1)),
            ("b".to_string(), Uuid::from_u128(2)),
        ]);
        let parts = [
            TopicPartition::new("b", 2),
            TopicPartition::new("a", 1),
            TopicPartition::new("b", 0),
            TopicPartition::new("gone", 0),
        ];
        assert_eq!(
            by_topic_id(&parts, &ids),
            vec![
                (Uuid::from_u128(1), "a".to_string(), vec![1]),
                (Uuid::from_u128(2), "b".to_string(), vec![0, 2]),
            ]
        );
    }
}
